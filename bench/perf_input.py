"""perf_analyzer `--input-data` JSON from your own audio files, for the `ser` ensemble.

    python -m ser_triton.bench.perf_input recordings/ call.flac -o perf_input.json
    perf_analyzer -m ser --input-data perf_input.json --concurrency-range 1:4

`AUDIO` has a variable length, so perf_analyzer cannot make up its inputs: each file (any format,
rate or channel count the client reads; directories are searched) becomes one entry of 16 kHz
mono float32 samples, exactly what the client would send. Files longer than the server's limit
are cut into segments as the client cuts them.
"""

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np

from ser_triton.core.audio import segmented_files
from ser_triton.core.contract import AUDIO, SAMPLE_RATE


def perf_entry(audio: np.ndarray) -> dict:
    """One request: the samples as base64 little-endian float32, shape [samples]."""
    return {AUDIO: {"b64": base64.b64encode(np.asarray(audio, "<f4").tobytes()).decode("ascii"),
                    "shape": [int(audio.size)]}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench.perf_input", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="audio files or directories")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    failures: list[str] = []
    segments = [segment for _, cut in segmented_files(args.paths, failures) for segment in cut]
    entries = [perf_entry(segment) for segment in segments]
    seconds = sum(segment.size for segment in segments) / SAMPLE_RATE
    for line in failures:
        print(line, file=sys.stderr)
    if not entries:
        print("perf_input: no readable audio: nothing written", file=sys.stderr)
        return 1
    args.output.write_text(json.dumps({"data": entries}))
    print(f"wrote {args.output}: {len(entries)} requests, {seconds:.1f} s of audio"
          + (f" ({len(failures)} skipped)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
