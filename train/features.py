"""The frozen recipe's cache: both encoders' outputs for every clip, computed once, memory-mapped.

Each clip runs alone through the served acoustic and text encoders (model.networks, eval mode, fp32,
on the model's device), as the server runs it. The outputs of all clips go into two flat float32 files on disk
(`acoustic.f32` [frames, width], `text.f32` [tokens, width]) with an index of where each clip's rows
are; training maps the files, so memory does not grow with the corpus. The cache is keyed by the
encoders' weights and the clips (their audio's digests and token ids): other weights or other
clips make another entry. An entry appears whole (its folder is renamed into place) or not at all.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ser_triton.core.glossary import ACOUSTIC_ENCODER, TEXT_ENCODER
from ser_triton.model.networks import AcousticEncoder, TextEncoder
from ser_triton.train.clips import Clip, read_clip
from ser_triton.train.transcripts import weights_key

INDEX = "index.json"


def cache_key(acoustic_key: str, text_key: str, clips: list[tuple[Clip, np.ndarray]]) -> str:
    digest = hashlib.sha256(f"{acoustic_key}:{text_key}".encode())
    for clip, ids in clips:
        digest.update(clip.key.encode())
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()[:24]


def row_key(clip: Clip, ids: np.ndarray) -> str:
    """A clip's rows in the cache: its audio and its text (one audio file may be listed with two texts)."""
    return f"{clip.key}:{hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]}"


class FeatureCache:
    def __init__(self, folder: Path):
        index = json.loads((folder / INDEX).read_text())
        self.folder, self.rows = folder, index["clips"]
        self.acoustic = np.memmap(folder / "acoustic.f32", np.float32, "r").reshape(-1, index["acoustic_width"])
        self.text = np.memmap(folder / "text.f32", np.float32, "r").reshape(-1, index["text_width"])
        self.empty_text = np.array(index["empty_text"], dtype=np.float32)

    def get(self, clip: Clip, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(acoustic features [frames, width], text features [tokens, width]) of a clip, copied out."""
        start, frames, token_start, tokens = self.rows[row_key(clip, ids)]
        return (np.array(self.acoustic[start:start + frames]), np.array(self.text[token_start:token_start + tokens]))


@torch.inference_mode()
def build_cache(model, clips: list[tuple[Clip, np.ndarray]], empty_ids: np.ndarray, cache: Path) -> FeatureCache:
    """The cache entry of `model`'s encoders (a train.network.ResearchModel) over `clips` (each with the
    token ids of its text), made if missing."""
    key = cache_key(weights_key(model.hubert), weights_key(model.bert), clips)
    folder = Path(cache) / "features" / key
    if (folder / INDEX).is_file():
        return FeatureCache(folder)
    acoustic, text = AcousticEncoder(model.hubert).eval(), TextEncoder(model.bert).eval()
    device = next(model.hubert.parameters()).device
    folder.parent.mkdir(parents=True, exist_ok=True)
    rows, frame_count, token_count = {}, 0, 0
    with tempfile.TemporaryDirectory(prefix=".features-", dir=folder.parent) as scratch:
        staged = Path(scratch) / "entry"
        staged.mkdir()
        with open(staged / "acoustic.f32", "wb") as acoustic_file, open(staged / "text.f32", "wb") as text_file:
            for clip, ids in tqdm(clips, desc="caching frozen encoder outputs", unit="clip", dynamic_ncols=True,
                                  disable=None):
                if row_key(clip, ids) in rows:
                    continue
                audio, _ = read_clip(clip.utterance.path)
                waveform = torch.from_numpy(audio)[None].to(device)
                features, _ = acoustic(waveform, torch.tensor([audio.size], device=device))
                words = _text_features(text, ids)
                features[0].float().cpu().numpy().tofile(acoustic_file)
                words.tofile(text_file)
                rows[row_key(clip, ids)] = [frame_count, features.shape[1], token_count, len(words)]
                frame_count, token_count = frame_count + features.shape[1], token_count + len(words)
        index = {"acoustic_width": model.hubert.config.hidden_size, "text_width": model.bert.config.hidden_size,
                 "networks": [ACOUSTIC_ENCODER.name, TEXT_ENCODER.name], "clips": rows,
                 "empty_text": _text_features(text, empty_ids).tolist()}
        (staged / INDEX).write_text(json.dumps(index))
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)
    return FeatureCache(folder)


def _text_features(text: TextEncoder, ids: np.ndarray) -> np.ndarray:
    ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))[None].to(next(text.parameters()).device)
    return text(ids, torch.ones_like(ids))[0].float().cpu().numpy()
