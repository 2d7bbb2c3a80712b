"""Regenerate the committed sentences (espeak-ng's own 22.05 kHz output, as FLAC).

    python samples/make_sentences.py     # needs Debian's espeak-ng; nothing else does

The export's calibration, the benchmark's workload and the tests read the committed files, so a
fresh machine needs no system packages. It also writes labelled.csv, a ser-evaluate manifest of
the sentences (`make evaluate DATA=samples/labelled.csv`): the emotion each one's words express,
and its text as the reference transcript.
"""

import csv
import subprocess
import tempfile
from pathlib import Path

import soundfile

SENTENCES = [
    ("I can't believe we finally won the championship today!", "happy"),
    ("Please leave me alone, I have had a terrible week.", "sad"),
    ("Why would you do that without asking me first?", "angry"),
    ("The meeting has been moved to three o'clock on Thursday.", "neutral"),
]
HERE = Path(__file__).resolve().parent


def write_manifest() -> None:
    with (HERE / "labelled.csv").open("w", newline="") as out:
        rows = csv.writer(out, lineterminator="\n")
        rows.writerow(["path", "label", "text"])
        rows.writerows([f"sentence{i}.flac", label, text] for i, (text, label) in enumerate(SENTENCES))


def main() -> None:
    write_manifest()
    with tempfile.TemporaryDirectory() as tmp:
        for i, (text, _) in enumerate(SENTENCES):
            wav = Path(tmp) / "sentence.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
            samples, rate = soundfile.read(wav, dtype="int16")
            soundfile.write(HERE / f"sentence{i}.flac", samples, rate)


if __name__ == "__main__":
    main()
