"""The baseline: the PyTorch research pipeline, one utterance at a time, as its users would run it.

    python -m ser_triton.bench.baseline --utterances 40 --workload-root bench/work/workload --variant eager-fp32 --out b.json

Variants (PYTORCH_VARIANTS): the research code as it is (eager fp32), and what a user tuning it on
a CPU would turn on: bf16 autocast (only on CPUs with AMX or AVX512-BF16: elsewhere bf16 is
emulated), torch.compile, and PyTorch's own dynamic int8. Each runs in its own process (the
bench starts it) so that its memory and threads are its own. torch.set_num_threads(2): this
machine's two cores, as the served ensemble gets them.
"""

import argparse
import contextlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ser_triton.bench.stats import rates
from ser_triton.bench.workload import load_or_make

PYTORCH_VARIANTS = {
    "eager-fp32": "PyTorch eager, fp32: the research code as it is",
    "eager-bf16": "torch.autocast('cpu', dtype=torch.bfloat16) around every call",
    "compile-fp32": "torch.compile(dynamic=True) of the three encoders and the head, fp32",
    "eager-int8": "torch.ao.quantization.quantize_dynamic of every nn.Linear (qint8)",
}
BASELINE_VARIANT = "eager-fp32"


def unavailable(variant: str, isa: list[str]) -> str | None:
    """Why a variant is not measured on this CPU (None: it is)."""
    from ser_triton.export.cpu_features import has_bf16

    if variant == "eager-bf16" and not has_bf16(isa):
        return "no AMX or AVX512-BF16 on this CPU: bf16 would be emulated, slower than fp32"
    return None


def prepare(pipeline, variant: str):
    """Turn the variant on in the pipeline; returns the context every call runs in."""
    c = pipeline.c
    if variant == "eager-bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    if variant == "compile-fp32":
        for name in ("acoustic_encoder", "asr", "text_encoder", "fusion_head"):
            setattr(c, name, torch.compile(getattr(c, name), dynamic=True))
    elif variant == "eager-int8":
        from torch.ao.quantization import quantize_dynamic

        for name in ("acoustic_encoder", "asr", "text_encoder", "fusion_head"):
            setattr(c, name, quantize_dynamic(getattr(c, name), {torch.nn.Linear}, dtype=torch.qint8))
    return contextlib.nullcontext


def measure(workload, preset: str, variant: str = BASELINE_VARIANT, threads: int = 2, warmup: int = 1,
            progress: bool = True) -> dict:
    from ser_triton.model.reference import ResearchPipeline
    from ser_triton.model.sources import build_components

    torch.set_num_threads(threads)
    started = time.perf_counter()
    pipeline = ResearchPipeline(build_components(preset))
    context = prepare(pipeline, variant)
    load_seconds = time.perf_counter() - started
    audio = [u.samples() for u in workload.utterances]
    by_length = sorted(audio, key=len)
    # compiled variants compile on first calls: warm up on short, typical and long audio
    warm = by_length[:1] + ([by_length[len(by_length) // 2], by_length[-1]] if variant == "compile-fp32" else [])
    started = time.perf_counter()
    with context():
        for samples in (warm if variant == "compile-fp32" else audio[:warmup]):
            pipeline.classify(samples)
    warmup_seconds = time.perf_counter() - started
    latencies = []
    began = time.perf_counter()
    for utterance, samples in zip(tqdm(workload.utterances, desc=f"pytorch {variant}", unit="utt", file=sys.stderr,
                                       disable=not progress, leave=False), audio):
        t = time.perf_counter()
        with context():
            pipeline.classify(samples, utterance.name)
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - began
    seconds = [u.seconds for u in workload.utterances]
    return {
        "description": f"model.reference.ResearchPipeline, {PYTORCH_VARIANTS[variant]}, one utterance at a time, "
                       f"torch.set_num_threads({threads})",
        "variant": variant,
        "torch": torch.__version__,
        "threads": threads,
        "load_seconds": round(load_seconds, 1),
        "warmup_seconds": round(warmup_seconds, 1),
        "concurrency": {"1": rates(latencies, seconds, wall)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workload-root", type=Path, required=True)
    parser.add_argument("--preset", default="full-random")
    parser.add_argument("--variant", choices=sorted(PYTORCH_VARIANTS), default=BASELINE_VARIANT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    workload = load_or_make(args.utterances, args.seed, args.workload_root)
    np.random.seed(args.seed)
    result = measure(workload, args.preset, args.variant, args.threads, progress=not args.no_progress)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
