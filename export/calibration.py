"""The speech a reduced-precision export is calibrated and judged on.

`--calibration-audio FILE|DIR ...`: your own recordings (any format the client reads; long files
are cut into the client's segments). Without it: the recorded English sentences that ship in this
repository (samples/, tests/data/), each at three speeds: enough to catch a variant that breaks,
too few to prove one that passes on your data, so give real audio where it matters
(`make bench` gives its whole workload).
"""

from pathlib import Path

import numpy as np
import soxr

from client.audio import AudioError, load_audio
from client.contract import SAMPLE_RATE
from client.infer import expand
from client.result import segment_bounds
from export.errors import ExportError

REPOSITORY = Path(__file__).resolve().parent.parent
RECORDED = tuple(sorted((REPOSITORY / "tests" / "data").glob("sentence*.flac"))) + (REPOSITORY / "samples" / "speech.wav",)
SPEEDS = (0.9, 1.0, 1.1)


def recorded_speech() -> list[np.ndarray]:
    """The repository's recorded sentences at SPEEDS."""
    audio = [load_audio(path) for path in RECORDED if path.is_file()]
    if not audio:
        raise ExportError("no calibration audio: the repository's recorded sentences are missing; "
                          "give --calibration-audio FILE_OR_DIR")
    return [soxr.resample(a, SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ").astype(np.float32) if speed != 1.0 else a
            for a in audio for speed in SPEEDS]


def load(paths: list[Path] | None) -> tuple[list[np.ndarray], str]:
    """(utterances, a description of where they came from)."""
    if not paths:
        return recorded_speech(), f"the repository's {len(RECORDED)} recorded sentences at speeds {SPEEDS}"
    failures: list[str] = []
    utterances = []
    for path in expand([str(p) for p in paths], failures):
        try:
            audio = load_audio(path)
        except AudioError as error:
            failures.append(f"{path}: {error}")
            continue
        utterances += [audio[start:end] for start, end in segment_bounds(audio.size)]
    if failures:
        raise ExportError("calibration audio could not be read: " + "; ".join(failures[:5]))
    return utterances, f"{len(utterances)} utterances from {', '.join(map(str, paths))}"
