"""A small labelled corpus for the training tests, made on the spot (no data set needed).

SPEAKERS speakers in two sessions, each saying every class CLIPS times: a short voiced tone whose pitch,
loudness and vibrato depend on the class (so a network can learn something), shifted per speaker, as
16 kHz FLAC files beside a manifest (`path,label,speaker,session,text`), and a `calm` class to map or
drop when asked. `corpus` and `cache` are fixtures the training tests take up by name.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_triton.core.contract import LABELS, SAMPLE_RATE

SPEAKERS = ("s1", "s2", "s3", "s4", "s5")
SESSIONS = {"s1": "1", "s2": "1", "s3": "2", "s4": "2", "s5": "3"}
PITCH = {"happy": 260.0, "sad": 140.0, "angry": 200.0, "neutral": 170.0, "calm": 150.0}
LOUDNESS = {"happy": 0.5, "sad": 0.15, "angry": 0.8, "neutral": 0.3, "calm": 0.2}
TEXT = {"happy": "we won the game", "sad": "i lost my dog", "angry": "get out of here", "neutral": "the door is open",
        "calm": "it is fine"}


def tone(label: str, speaker: int, take: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng([speaker, take, LABELS.index(label) if label in LABELS else 9])
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = PITCH[label] * (1 + 0.05 * speaker) * (1 + 0.03 * np.sin(2 * np.pi * (3 + take) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    return (LOUDNESS[label] * voice / 2 + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def build(folder: Path, clips: int = 2, seconds: float = 0.6, labels=LABELS, speakers=SPEAKERS) -> Path:
    """The manifest of a new corpus in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, speaker in enumerate(speakers):
        for label in labels:
            for take in range(clips):
                name = f"{speaker}_{label}_{take}.flac"
                soundfile.write(folder / name, tone(label, s, take, seconds), SAMPLE_RATE)
                rows.append([name, label, speaker, SESSIONS.get(speaker, "9"),
                             TEXT[label]])
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "session", "text"])
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus of the defaults, for a test module."""
    return build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """ser-train's --cache for a test module (the ASR's ONNX file and transcripts, the frozen features)."""
    return tmp_path_factory.mktemp("train-cache")
