"""The recorded speech that ships with the package (espeak-ng; make_sample.py, make_sentences.py and
make_words.py regenerate it): the demo's sample, the English sentences that calibrate reduced-precision
exports and seed the benchmark's workload, and words spoken one at a time whose times are known."""

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


def words() -> tuple[Path, list[tuple[str, float, float]]]:
    """samples/words.flac (16 kHz: words spoken one at a time, with gaps) and where each word is:
    (word, start, end) in seconds, from words.csv."""
    import csv

    with open(str(_HERE / "words.csv"), newline="") as table:
        rows = [(row["word"], float(row["start"]), float(row["end"])) for row in csv.DictReader(table)]
    return Path(str(_HERE / "words.flac")), rows
