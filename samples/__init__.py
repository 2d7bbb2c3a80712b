"""The recorded speech that ships with the package (espeak-ng; make_sample.py and make_sentences.py
regenerate it): the demo's sample, and the English sentences that calibrate reduced-precision
exports and seed the benchmark's workload."""

from importlib import resources
from pathlib import Path

_HERE = resources.files(__name__)


def speech() -> Path:
    """samples/speech.wav: one sentence, the demo's and the README's example."""
    return Path(str(_HERE / "speech.wav"))


def sentences() -> tuple[Path, ...]:
    """samples/sentence*.flac: four more sentences, in order."""
    return tuple(sorted(Path(str(path)) for path in _HERE.iterdir() if path.name.startswith("sentence")
                        and path.name.endswith(".flac")))


def recorded() -> tuple[Path, ...]:
    """Every recording: the sentences, then the sample."""
    return (*sentences(), speech())
