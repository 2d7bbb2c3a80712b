"""The baseline: the plain PyTorch research pipeline, eager, one utterance at a time.

    python -m bench.baseline --workload bench/work/workload/<key> --preset full-random --out baseline.json

Runs in its own process (the bench starts it) so that its peak memory is its own and its threads
do not share an interpreter with the server's client. torch.set_num_threads(2): this machine's
two cores, as the served ensemble gets them.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.stats import rates
from bench.workload import load_or_make


def measure(workload, preset: str, threads: int = 2, warmup: int = 1, progress: bool = True) -> dict:
    from model.reference import ResearchPipeline
    from model.sources import build_components

    torch.set_num_threads(threads)
    started = time.perf_counter()
    pipeline = ResearchPipeline(build_components(preset))
    load_seconds = time.perf_counter() - started
    audio = [u.samples() for u in workload.utterances]
    for samples in audio[:warmup]:
        pipeline.classify(samples)
    latencies = []
    began = time.perf_counter()
    for utterance, samples in zip(tqdm(workload.utterances, desc="pytorch baseline", unit="utt", file=sys.stderr,
                                       disable=not progress, leave=False), audio):
        t = time.perf_counter()
        pipeline.classify(samples, utterance.name)
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - began
    seconds = [u.seconds for u in workload.utterances]
    return {
        "description": "model.reference.ResearchPipeline, PyTorch eager, one utterance at a time, "
                       f"torch.set_num_threads({threads})",
        "torch": torch.__version__,
        "threads": threads,
        "load_seconds": round(load_seconds, 1),
        "concurrency": {"1": rates(latencies, seconds, wall)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workload-root", type=Path, required=True)
    parser.add_argument("--preset", default="full-random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    workload = load_or_make(args.utterances, args.seed, args.workload_root)
    np.random.seed(args.seed)
    result = measure(workload, args.preset, args.threads, progress=not args.no_progress)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
