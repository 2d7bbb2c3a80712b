"""What the Trainer iterates over: clips read from disk as they are needed, and padded batches.

Training clips are sped up or slowed down (`speed`), cut to a random window (`crop_seconds`), given
white noise (`noise`) and lose their text (`text_dropout`) at random; every draw depends only on the
seed, the epoch and the clip, so a run is the same however it is resumed or spread over processes.
Validation and test clips are whole and keep their text. A clip is its audio (end to end) or its encoders'
cached outputs (frozen: features.py), with the tokens of its transcript ("asr") or of the data's text ("reference").
"""

import numpy as np
import torch

from ser_triton.core.contract import LABELS, MIN_SAMPLES, SAMPLE_RATE
from ser_triton.serving.steps.batching import pad_and_stack
from ser_triton.train.clips import Clip, read_clip

NOISE_SNR_DB = (10.0, 30.0)
"""The signal-to-noise ratios the noise augmentation draws from (uniformly, in dB)."""
FRAMES_PER_SECOND = 50
"""Acoustic frames per second of audio (the encoders' convolutional front end: 320 samples a frame)."""


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, clips: list[Clip], text: str, empty_ids: np.ndarray, crop_seconds: float | None = None,
                 text_dropout: float = 0.0, seed: int = 0, features=None, noise: float = 0.0, speed: float = 0.0):
        self.clips, self.text, self.empty_ids, self.features = clips, text, empty_ids, features
        self.crop_seconds, self.text_dropout, self.seed = crop_seconds, text_dropout, seed
        self.noise, self.speed = noise, speed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def _window(self, length: int, per_second: int, rng) -> slice:
        if self.crop_seconds is None:
            return slice(0, length)
        window = max(1, int(self.crop_seconds * per_second))
        start = int(rng.integers(0, length - window + 1)) if length > window else 0
        return slice(start, start + window)

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        ids = clip.input_ids(self.text)
        item = {"labels": LABELS.index(clip.utterance.label)}
        if self.features is None:
            audio, _ = read_clip(clip.utterance.path)
            if self.speed:
                audio = resample(audio, rng.uniform(1 - self.speed, 1 + self.speed))
            audio = audio[self._window(audio.size, SAMPLE_RATE, rng)]
            if self.noise and rng.random() < self.noise:
                audio = add_noise(audio, rng.uniform(*NOISE_SNR_DB), rng)
            item["waveform"] = audio
        else:
            acoustic, item["text_features"] = self.features.get(clip, ids)
            item["acoustic_features"] = acoustic[self._window(len(acoustic), FRAMES_PER_SECOND, rng)]
        item["input_ids"] = ids
        if self.text_dropout and rng.random() < self.text_dropout:
            item["input_ids"] = self.empty_ids
            if self.features is not None:
                item["text_features"] = self.features.empty_text
        return item


def resample(audio: np.ndarray, factor: float) -> np.ndarray:
    """The clip played `factor` times faster (pitch and tempo together), by linear interpolation."""
    length = max(MIN_SAMPLES, int(round(audio.size / factor)))
    positions = (np.arange(length) + 0.5) * (audio.size / length) - 0.5
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """White noise at `snr_db` below the clip's mean power."""
    power = float(np.mean(audio.astype(np.float64) ** 2)) + 1e-12
    return (audio + rng.standard_normal(audio.size) * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def collate(items: list[dict]) -> dict:
    """Zero-padded batch tensors, with the lengths and masks the served networks take."""
    batch = {"labels": torch.tensor([item["labels"] for item in items])}
    ids = [np.asarray(item["input_ids"])[None] for item in items]
    batch["input_ids"] = torch.from_numpy(pad_and_stack(ids))
    batch["attention_mask"] = torch.from_numpy(pad_and_stack([np.ones_like(i) for i in ids]))
    if "waveform" in items[0]:
        batch["waveform"] = torch.from_numpy(pad_and_stack([item["waveform"][None] for item in items]))
        batch["waveform_length"] = torch.tensor([item["waveform"].size for item in items])
    else:
        batch["acoustic_features"] = torch.from_numpy(pad_and_stack([item["acoustic_features"][None]
                                                                     for item in items]))
        batch["acoustic_frames"] = torch.tensor([len(item["acoustic_features"]) for item in items])
        batch["text_features"] = torch.from_numpy(pad_and_stack([item["text_features"][None] for item in items]))
        del batch["input_ids"]
    return batch
