"""The speech a reduced-precision export is calibrated and judged on.

`--calibration-audio FILE|DIR ...`: your own recordings (any format the client reads; long files
are cut into the client's segments). Without it: the recorded English sentences that ship in this
package (ser_triton.samples), each at three speeds: enough to catch a variant that breaks,
too few to prove one that passes on your data, so give real audio where it matters
(`make bench` gives its whole workload).
"""

from pathlib import Path

import numpy as np
import soxr

from ser_triton import samples
from ser_triton.core.audio import load_audio, segmented_files
from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.export.errors import ExportError

SPEEDS = (0.9, 1.0, 1.1)


def recorded_speech() -> list[np.ndarray]:
    """The package's recorded sentences at SPEEDS."""
    audio = [load_audio(path) for path in samples.recorded() if path.is_file()]
    if not audio:
        raise ExportError("no calibration audio: the package's recorded sentences are missing; "
                          "give --calibration-audio FILE_OR_DIR")
    return [soxr.resample(a, SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ").astype(np.float32) if speed != 1.0 else a
            for a in audio for speed in SPEEDS]


def load(paths: list[Path] | None) -> tuple[list[np.ndarray], str]:
    """(utterances, a description of where they came from)."""
    if not paths:
        return recorded_speech(), f"the package's {len(samples.recorded())} recorded sentences at speeds {SPEEDS}"
    failures: list[str] = []
    utterances = [segment for _, segments in segmented_files(paths, failures) for segment in segments]
    if failures:
        raise ExportError("calibration audio could not be read: " + "; ".join(failures[:5]))
    return utterances, f"{len(utterances)} utterances from {', '.join(map(str, paths))}"
