"""Regenerate the committed test sentences (espeak-ng's own 22.05 kHz output, as FLAC).

    python tests/data/make_sentences.py     # needs Debian's espeak-ng; the tests do not

The tests read the committed files, so a fresh machine needs no system packages to run them.
"""

import subprocess
import tempfile
from pathlib import Path

import soundfile

SENTENCES = [
    "I can't believe we finally won the championship today!",
    "Please leave me alone, I have had a terrible week.",
    "Why would you do that without asking me first?",
    "The meeting has been moved to three o'clock on Thursday.",
]
HERE = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / "sentence.wav"
            subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
            samples, rate = soundfile.read(wav, dtype="int16")
            soundfile.write(HERE / f"sentence{i}.flac", samples, rate)


if __name__ == "__main__":
    main()
