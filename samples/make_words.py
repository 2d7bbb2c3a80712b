"""Regenerate samples/words.flac and words.csv: English words spoken one at a time, with known gaps.

    python samples/make_words.py     # needs Debian's espeak-ng; nothing else does

Each word is spoken alone by espeak-ng, resampled to 16 kHz, cut to its sound (its first and last
sample above 1% of its peak) and placed after a gap of known length, so where every word starts
and ends is known to the sample: words.csv (word, start, end in seconds). The word-timing tests
read the committed files, so a fresh machine needs no system packages.
"""

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import soundfile

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import SAMPLE_RATE

WORDS = (("CALL", 0.5), ("ME", 0.35), ("BACK", 0.45), ("TOMORROW", 0.3), ("MORNING", 0.4))
"""Each word and the silence before it (seconds): gaps under the segmenter's 0.64 s pause, so the
words make one utterance; the recording ends with 1 s of silence."""
LEVEL = 0.01
HERE = Path(__file__).resolve().parent


def spoken(word: str, folder: Path) -> np.ndarray:
    """One word at 16 kHz, cut to its first and last sample above LEVEL of its peak."""
    path = folder / "word.wav"
    subprocess.run(["espeak-ng", "-w", str(path), word.lower()], check=True, capture_output=True)
    audio = load_audio(path)
    loud = np.flatnonzero(np.abs(audio) > LEVEL * np.abs(audio).max())
    return audio[loud[0]:loud[-1] + 1]


def main() -> None:
    pieces, rows, position = [], [], 0
    with tempfile.TemporaryDirectory() as folder:
        for word, gap in WORDS:
            audio = spoken(word, Path(folder))
            pieces += [np.zeros(round(gap * SAMPLE_RATE), np.float32), audio]
            position += round(gap * SAMPLE_RATE)
            rows.append((word, position / SAMPLE_RATE, (position + audio.size) / SAMPLE_RATE))
            position += audio.size
    pieces.append(np.zeros(SAMPLE_RATE, np.float32))
    soundfile.write(HERE / "words.flac", np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    with (HERE / "words.csv").open("w", newline="") as out:
        table = csv.writer(out, lineterminator="\n")
        table.writerow(["word", "start", "end"])
        table.writerows(rows)
    print(f"{HERE / 'words.flac'}: {position / SAMPLE_RATE + 1:.2f} s, {len(rows)} words")


if __name__ == "__main__":
    main()
