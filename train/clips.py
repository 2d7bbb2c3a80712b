"""Every utterance read once before training: usable or skipped (with its reason), and its text.

Audio is read with the client's own loader (core.audio.load_audio: any format, mixed to mono,
resampled to 16 kHz with soxr), so training sees the samples the server is sent. A file that cannot
be read, is too short or empty, or is longer than `max_seconds` (by default one request of the client,
which cuts longer recordings) is skipped with one line saying why, as ser-evaluate does, and counted.
Only each clip's length, key (a digest of the file's bytes) and text are kept: training reads the
audio again as it needs it.
"""

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ser_triton.core.audio import AudioError, load_audio
from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.evaluation.datasets import Skipped, Utterance


@dataclass
class Clip:
    utterance: Utterance
    key: str
    """sha256 of the file's bytes: what caches know the audio by."""
    samples: int
    transcript: str
    """The served ASR's transcript (what the text encoder reads when served)."""
    transcript_ids: np.ndarray
    asr_margin: float
    """The smallest gap between a frame's two largest CTC logits (how near the transcript is to a tie)."""
    reference_ids: np.ndarray | None = None
    """The data's own text, tokenised (--text reference), where it has one."""

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def input_ids(self, text: str) -> np.ndarray:
        """Token ids of the text the clip trains on: "asr" (the transcript) or "reference"."""
        return self.transcript_ids if text == "asr" else self.reference_ids


def read_clip(path: Path) -> tuple[np.ndarray, str]:
    """(samples as the client sends them, key)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise AudioError(f"cannot read the file ({error.strerror})") from None
    return load_audio(data), hashlib.sha256(data).hexdigest()[:32]


def survey(utterances: list[Utterance], max_seconds: float, asr, tokenizer) -> tuple[list[Clip], list[Skipped]]:
    """Usable clips, with the served ASR's transcript (transcripts.ServedASR) and the tokens of it and of
    the data's text, and the skipped ones, in the utterances' order."""
    clips, skipped = [], []
    for utterance in tqdm(utterances, desc="reading clips", unit="clip", dynamic_ncols=True, disable=None):
        try:
            audio, key = read_clip(utterance.path)
        except AudioError as error:
            skipped.append(skip(utterance, "unusable audio", str(error)))
            continue
        if audio.size > max_seconds * SAMPLE_RATE:
            skipped.append(skip(utterance, "too long", f"{audio.size / SAMPLE_RATE:.1f} s, longer than "
                                                       f"--max-seconds {max_seconds:g}"))
            continue
        transcript, margin = asr.transcribe(audio, key)
        ids, _ = tokenizer.tokenize([transcript])
        reference = None if utterance.text is None else tokenizer.tokenize([utterance.text])[0][0]
        clips.append(Clip(utterance, key, int(audio.size), transcript, ids[0], margin, reference))
    asr.save()
    return clips, skipped


def skip(utterance: Utterance, reason: str, detail: str) -> Skipped:
    row = Skipped(utterance.id, reason, detail)
    tqdm.write(row.line(), file=sys.stderr)
    return row
