"""`make bench`: the served `ser` ensemble against the PyTorch pipeline, on the same utterances.

    python -m ser_triton.bench                    # full run: 40 utterances, every precision variant, writes bench/results/
    python -m ser_triton.bench --quick            # a few minutes (once the exports exist): 12 utterances
    python -m ser_triton.bench --preset tiny --quick --out /tmp/results --work /tmp/work     # what the test runs
    python -m ser_triton.bench --training         # ser-train's recipes on RAVDESS instead (bench/training.py)

1. workload: seeded utterances with IEMOCAP-like lengths (bench/workload.py), cached;
2. PyTorch: model.reference.ResearchPipeline one utterance at a time, 2 threads, in each variant this
   CPU supports (bench/baseline.py: eager fp32, bf16 autocast, torch.compile, PyTorch int8);
3. for each served variant (export.precision: fp32, int8, int8-static, bf16 where the CPU has it,
   auto): `python -m ser_triton.export --precision X`, calibrated and judged on the workload, into the work
   folder (reused while what the export reads and its arguments are unchanged), the bundled tritonserver on
   free loopback ports, perf_analyzer at each concurrency over gRPC, the client library end to end
   (whose answers give the variant's drift from fp32), and the server's peak memory;
4. for the --streaming-variants, the streaming stage (bench/streaming.py): K live streams paced
   in real time, the delay from each utterance's end to its result, the most streams sustained;
5. this CPU's GEMM rate per precision (bench/ceilings.py) and each variant's share of its ceiling;
6. bench/results/summary.json, summary.md, throughput_latency.png and streaming.png.

Each stage is a module of bench/: workload, pytorch_peers (running baseline), exports (current while
their fingerprint is), variants (served, perf, streaming), ceilings, summary (drift, analysis) and
report; streaming_only for --streaming-only. This module is the command line.
"""

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from ser_triton.bench import analysis, ceilings, pytorch_peers, report, streaming_only, summary
from ser_triton.bench.baseline import BASELINE_VARIANT, PYTORCH_VARIANTS
from ser_triton.bench.exports import EXPORT_ARGS, ensure_export
from ser_triton.bench.variants import run_variant
from ser_triton.bench.workload import WORK, load_or_make
from ser_triton.export.cpu_features import cpu_flags, has_bf16, isa
from ser_triton.export.precision import PRECISIONS
from ser_triton.serving import perf_analyzer

RESULTS = Path(__file__).resolve().parent / "results"
ISA = isa(cpu_flags())
VARIANTS = ("fp32", "int8", "int8-static") + (("bf16",) if has_bf16(ISA) else ()) + ("auto",)
"""The served variants measured by default on this CPU (bf16 only where the hardware runs it)."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer utterances, one round per level")
    parser.add_argument("--preset", choices=("full-random", "tiny"), default="full-random",
                        help="model size (full-random: full-size networks with random weights)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated served variants, of {', '.join(PRECISIONS)} (default {','.join(VARIANTS)})")
    parser.add_argument("--pytorch-variants", default=None,
                        help=f"comma-separated, of {', '.join(PYTORCH_VARIANTS)} (default: all; quick: "
                             f"{BASELINE_VARIANT}); those this CPU cannot run are skipped, with the reason in the summary")
    parser.add_argument("--concurrency", default="1,2,4,8", help="perf_analyzer concurrency levels")
    parser.add_argument("--client-concurrency", default=None,
                        help="client-library concurrency levels (default 1,4; quick: 4)")
    parser.add_argument("--utterances", type=int, default=None, help="workload size (default 40; quick: 12)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="perf_analyzer requests per level, in rounds of the workload (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-args", default=EXPORT_ARGS,
                        help=f"extra `python -m ser_triton.export` arguments, quoted (default: {EXPORT_ARGS!r})")
    parser.add_argument("--reuse-export", action="store_true",
                        help="use existing exports even if the export code changed since")
    parser.add_argument("--re-export", action="store_true", help="export again even if an export is current")
    parser.add_argument("--skip-baseline", action="store_true", help="reuse the baseline of the last run in --work")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where summary.* go (default bench/results)")
    parser.add_argument("--work", type=Path, default=WORK, help="cache: workload, exports, raw measurements")
    parser.add_argument("--tools", type=Path, default=perf_analyzer.DEFAULT_HOME,
                        help="where perf_analyzer is installed (default: the one make setup installs)")
    parser.add_argument("--streaming-variants", default=None,
                        help="comma-separated variants whose streaming capacity is measured (default: fp32 and auto "
                             "where measured; quick: the first variant); '' for none")
    parser.add_argument("--stream-seconds", type=float, default=None,
                        help="length of each paced stream (default 60; quick: 15)")
    parser.add_argument("--most-streams", type=int, default=16, help="the most concurrent streams tried (default 16)")
    parser.add_argument("--streaming-only", action="store_true",
                        help="measure only the streaming stage of --streaming-variants (their perf_analyzer "
                             "throughput included, for the capacity) and store it into the summary.json in --out, "
                             "with this run's machine and date; the rest of the summary stays as it was")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(PRECISIONS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(PRECISIONS)}")
    args.pytorch_variants = [v for v in (args.pytorch_variants or (BASELINE_VARIANT if args.quick else ",".join(
        PYTORCH_VARIANTS))).split(",") if v]
    unknown = set(args.pytorch_variants) - set(PYTORCH_VARIANTS)
    if unknown or BASELINE_VARIANT not in args.pytorch_variants:
        parser.error(f"--pytorch-variants: choose from {', '.join(PYTORCH_VARIANTS)}, {BASELINE_VARIANT} included")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.client_concurrency = [int(c) for c in (args.client_concurrency or ("4" if args.quick else "1,4")).split(",") if c]
    args.utterances = args.utterances or (12 if args.quick else 40)
    if args.streaming_variants is None:
        default = args.variants[:1] if args.quick else [v for v in args.variants if v in ("fp32", "auto")]
        args.streaming_variants = default
    else:
        args.streaming_variants = [v for v in args.streaming_variants.split(",") if v]
    if set(args.streaming_variants) - set(args.variants):
        parser.error("--streaming-variants must be among --variants")
    args.stream_seconds = args.stream_seconds or (15.0 if args.quick else 60.0)
    args.rounds = args.rounds or 1
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--training" in argv:  # ser-train's recipes on RAVDESS: a stage of its own (bench/training.py)
        from ser_triton.bench import training
        return training.main([arg for arg in argv if arg != "--training"])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.streaming_only:
        return streaming_only.run(args)
    load_before = report.load_average()
    # workload, perf_analyzer, each PyTorch variant, each export, each served run, ceilings, report
    stages = 2 + len(args.pytorch_variants) + 2 * len(args.variants) + 2
    progress = tqdm(total=stages, desc="bench", unit="stage", file=sys.stderr, disable=args.no_progress)
    workload_root = args.work / "workload"
    workload = speak_workload(args, workload_root)
    progress.update()
    analyzer = perf_analyzer.install(args.tools)
    progress.update()
    pytorch, skipped = pytorch_peers.run_all(args, workload_root, ISA, progress)
    exports = {}
    for variant in args.variants:
        exports[variant] = ensure_export(variant, args, workload, progress)
        progress.update()
    systems, answers = {analysis.BASELINE: pytorch[BASELINE_VARIANT]}, {}
    for variant in args.variants:
        progress.set_postfix_str(variant)
        systems[variant], answers[variant] = run_variant(variant, exports[variant], workload, analyzer, args)
        progress.update()
    precisions = summary.served_precisions(systems, args.variants)
    rates = ceilings.gemm_rates({key for keys in precisions.values() for key in keys.values()} | {"fp32"})
    progress.update()
    measured = summary.Measured(workload, analyzer.version(), pytorch, skipped, exports, systems, answers, rates)
    written = summary.build(args, measured, load_before)
    paths = report.write(written, args.out)
    progress.update()
    progress.close()
    print(f"wrote {', '.join(str(path) for path in paths.values())}")
    print("speedup vs PyTorch eager fp32 (audio-s/s at best concurrency): "
          + ", ".join(f"{k} {v}x" for k, v in written["speedup_vs_pytorch"].items())
          + "; vs the best PyTorch variant: "
          + ", ".join(f"{k} {v}x" for k, v in written["speedup_vs_best_pytorch"].items()))
    return 0


def speak_workload(args, root: Path):
    """The seeded workload (bench/workload.py), made once and reused."""
    bar = tqdm(total=args.utterances, desc="speaking utterances", unit="utt", file=sys.stderr,
               disable=args.no_progress, leave=False)
    workload = load_or_make(args.utterances, args.seed, root, progress=bar.update)
    bar.close()
    return workload


if __name__ == "__main__":
    sys.exit(main())
