"""An ASR that hears where words are, for testing word times end to end (the tiny preset's ASR is random).

`SoundASR` has the served ASR's signature and its 20 ms CTC frames (frame i covers samples
[320 i, 320 i + 400), as wav2vec2's convolutions do), and writes the letter A on every frame that
holds sound (a sample above LEVEL) and the word delimiter on every other: each stretch of sound is
one word "A", at the frames where the sound is. Short dips inside a word (a stop's closure) are
closed first. On samples/words.flac (words with silent gaps, timed to the sample) its words are
the spoken words, so the served word times can be held against the known ones. `install` puts it
in place of a repository's ASR network, through the export's own ONNX export and parity check.
"""

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

from ser_triton.core import specs
from ser_triton.export import repository
from ser_triton.export.onnx_export import export_and_check
from ser_triton.model.sources import CTC_VOCAB

FRAME_SAMPLES, FRAME_WINDOW = 320, 400
"""wav2vec2's CTC frames: one every 320 samples (20 ms), each seeing 400 (25 ms)."""
LEVEL = 1e-3
"""A sample is sound from here up: below every word's own 1% of its peak (where make_words.py cut
it), above the gaps' digital silence."""
CLOSED_FRAMES = 2
"""Dips of up to 2 x 2 frames inside a word are closed; the gaps between words are longer (>= 0.3 s)."""
LETTER, DELIMITER = CTC_VOCAB.index("A"), CTC_VOCAB.index("|")


class SoundASR(nn.Module):
    """waveform [B, S], waveform_length [B] -> ctc_logits [B, T, V], logit_frames [B]."""

    outputs = ("ctc_logits", "logit_frames")

    def forward(self, waveform, waveform_length):
        loud = (waveform.abs() > LEVEL).to(torch.float32)[:, None, :]
        frames = functional.max_pool1d(loud, FRAME_WINDOW, FRAME_SAMPLES)
        width = 2 * CLOSED_FRAMES + 1
        frames = functional.max_pool1d(frames, width, 1, CLOSED_FRAMES)  # closing: dilate, then erode
        frames = -functional.max_pool1d(-frames, width, 1, CLOSED_FRAMES)
        sound = frames[:, 0, :, None]
        letter = functional.one_hot(torch.tensor(LETTER), len(CTC_VOCAB)).to(torch.float32)
        delimiter = functional.one_hot(torch.tensor(DELIMITER), len(CTC_VOCAB)).to(torch.float32)
        logits = 10.0 * (sound * letter + (1.0 - sound) * delimiter)
        count = torch.div(waveform_length - FRAME_WINDOW, FRAME_SAMPLES, rounding_mode="floor") + 1
        return logits, count.clamp(min=0).to(torch.int64)


def install(root: Path, sizes: specs.Sizes) -> None:
    """SoundASR in place of the ASR network of the repository at `root` (its config stays)."""
    spec = specs.model_specs(sizes)[specs.ASR]
    export_and_check(SoundASR, spec, sizes, repository.network_file(root, specs.ASR))
