"""Regenerate samples/speech.wav, the demo recording: one English sentence from espeak-ng.

    python samples/make_sample.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import soundfile

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import SAMPLE_RATE

SENTENCE = "I can't believe we finally won the championship today!"
OUTPUT = Path(__file__).with_name("speech.wav")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        spoken = Path(folder) / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(spoken), SENTENCE], check=True)
        samples = load_audio(spoken)
    soundfile.write(OUTPUT, samples, SAMPLE_RATE, subtype="PCM_16")
    print(f"{OUTPUT}: {len(samples) / SAMPLE_RATE:.2f} s, {OUTPUT.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
