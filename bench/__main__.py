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
   folder (reused while the export code and arguments are unchanged), the bundled tritonserver on
   free loopback ports, perf_analyzer at each concurrency over gRPC, the client library end to end
   (whose answers give the variant's drift from fp32), and the server's peak memory;
4. for the --streaming-variants, the streaming stage (bench/streaming.py): K live streams paced
   in real time, the delay from each utterance's end to its result, the most streams sustained;
5. this CPU's GEMM rate per precision (bench/ceilings.py) and each variant's share of its ceiling;
6. bench/results/summary.json, summary.md, throughput_latency.png and streaming.png.
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from ser_triton.bench import analysis, ceilings, report, served, streaming
from ser_triton.bench import drift as drift_of
from ser_triton.bench.baseline import BASELINE_VARIANT, PYTORCH_VARIANTS, unavailable
from ser_triton.bench.workload import WORK, load_or_make
from ser_triton.evaluation.systems import prediction_record
from ser_triton.export.cpu_features import cpu_flags, has_bf16, isa
from ser_triton.export.precision import PRECISIONS
from ser_triton.serving import perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PYTORCH_TIMEOUT_S = 3600
"""A PyTorch variant (torch.compile's first calls, above all) that takes longer is reported as failed."""
ISA = isa(cpu_flags())
VARIANTS = ("fp32", "int8", "int8-static") + (("bf16",) if has_bf16(ISA) else ()) + ("auto",)
"""The served variants measured by default on this CPU (bf16 only where the hardware runs it)."""
STAMP = "bench_export.json"
EXPORT_ARGS = ""
"""The default deployment of `make export` is what is measured: dynamic batching up to 8 with no
added delay, requests batched together only while zero padding adds at most 25% work (padding
mixed lengths to the longest cost 13% audio-s/s at concurrency 4 in int8 when it was unbounded),
one ONNX Runtime thread per network (the two encoders run in parallel, one per core; 2 threads
each measured the same or worse). `--export-args` measures other settings."""
GFLOP_PER_AUDIO_SECOND = sum(ceilings.GFLOP_PER_AUDIO_SECOND.values())
log = logging.getLogger("bench")


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


# ---------------------------------------------------------------- exports


def _fingerprint(command: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(command).encode())
    for folder in (ROOT / "model", ROOT / "export", ROOT / "serving" / "steps", ROOT / "client"):
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_export(variant: str, args, workload, progress) -> dict:
    """The variant's model repository, exported unless a current one is there; its export report.

    The export runs as `python -m ser_triton.export`, in a process of its own, so that the peak memory its
    report gives is the export's alone, as a user running `make export` sees it."""
    suffix = "" if args.preset == "full-random" else f"-{args.preset}"
    repository = args.work / f"repo_{variant}{suffix}"
    command = [sys.executable, "-m", "ser_triton.export", "--preset", args.preset, "--out", str(repository),
               "--precision", variant, *args.export_args.split()]
    if variant != "fp32":  # calibrated and judged on the whole workload
        command += ["--calibration-audio", str(workload.directory)]
    stamp = repository / STAMP
    fingerprint = _fingerprint(command[2:])
    current = (repository / "export_report.json").is_file() and (
        args.reuse_export or stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint)
    if args.re_export or not current:
        progress.set_postfix_str(f"exporting {variant} ({args.preset})")
        stamp.unlink(missing_ok=True)
        repository.parent.mkdir(parents=True, exist_ok=True)
        log_path = args.work / f"export_{variant}{suffix}.log"
        with open(log_path, "w") as handle:
            done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text().strip().splitlines()[-10:])
            raise SystemExit(f"bench: export of {variant} failed (log: {log_path}):\n{tail}")
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "command": command[1:]}) + "\n")
        reused = False
    else:
        reused = True
    export_report = json.loads((repository / "export_report.json").read_text())
    shown = [str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in command[1:]]
    return {"repository": repository, "report": export_report, "reused": reused,
            "command": "python " + " ".join(shown)}


def deployment_of(repository: Path) -> dict:
    from ser_triton.export.repository import read_config
    from ser_triton.core.specs import ACOUSTIC_ENCODER
    from ser_triton.serving.steps.parameters import INTRA_OP_THREADS

    config = read_config(repository / ACOUSTIC_ENCODER / "config.pbtxt")
    return {
        "max_batch_size": config.max_batch_size,
        "queue_delay_us": config.dynamic_batching.max_queue_delay_microseconds,
        "intra_op_threads_per_network": int(config.parameters[INTRA_OP_THREADS].string_value),
        "instances_per_network": sum(g.count for g in config.instance_group),
    }


def export_summary(export: dict) -> dict:
    r = export["report"]
    optimization = r.get("optimization", {})
    return {
        "command": export["command"],
        "reused_from_earlier_run": export["reused"],
        "export_seconds": r.get("export_seconds"),
        "peak_rss_mib": r.get("peak_rss_mib"),
        "parity_max_abs_diff_onnx_vs_torch": {
            n: max(o["max_abs_diff_onnx_vs_torch"] for o in e["outputs"].values()) for n, e in r["networks"].items()},
        "parity_max_abs_diff_batched_vs_alone": {
            n: max(o["max_abs_diff_batched_vs_alone"] for o in e["outputs"].values()) for n, e in r["networks"].items()},
        "optimization_seconds": optimization.get("seconds"),
        "onnx_mib": {n: round(v.get("onnx_bytes", 0) / 2**20, 1) for n, v in optimization.get("networks", {}).items()},
        "graph_rewrites": {n: {k: v for k, v in e.items() if k in ("conv_to_matmul", "fused_operators")}
                           for n, e in optimization.get("networks", {}).items()},
        "fp32_rewrite_max_abs_diff": {n: max(o["max_abs_diff"] for o in e["fp32_vs_exported"].values())
                                      for n, e in optimization.get("networks", {}).items() if "fp32_vs_exported" in e},
    }


def precision_summary(export: dict) -> dict | None:
    """What the export chose per network and the drift it measured on the workload."""
    choice = export["report"].get("precision_choice")
    if not choice:
        return None
    return {
        "chosen": {name: entry["chosen"] for name, entry in choice["networks"].items()},
        "serving": {name: ceilings.serving_key(entry["candidates"][entry["chosen"]]["variant"])
                    for name, entry in choice["networks"].items()},
        "export_drift_on_workload": choice["chain_drift_vs_fp32"],
        "export_within_limits": choice["within_limits"],
        "candidates_seconds": {name: {v: c.get("seconds") for v, c in entry["candidates"].items()}
                               for name, entry in choice["networks"].items()},
    }


# ---------------------------------------------------------------- the run


def run_pytorch(variant: str, args, workload_root: Path) -> dict:
    """One PyTorch variant over the workload, in a process of its own (bench/baseline.py)."""
    out = args.work / f"pytorch-{variant}-{args.preset}-n{args.utterances}.json"
    if not (args.skip_baseline and out.is_file()):
        command = [sys.executable, "-m", "ser_triton.bench.baseline", "--utterances", str(args.utterances), "--seed",
                   str(args.seed), "--workload-root", str(workload_root), "--preset", args.preset,
                   "--variant", variant, "--out", str(out)]
        if args.no_progress:
            command.append("--no-progress")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
        try:
            code = subprocess.run(command, cwd=ROOT, env=env, timeout=PYTORCH_TIMEOUT_S).returncode
            problem = f"exited with {code}" if code else None
        except subprocess.TimeoutExpired:
            problem = f"gave no result within {PYTORCH_TIMEOUT_S} s"
        if problem:
            if variant == BASELINE_VARIANT:
                raise SystemExit(f"bench: the PyTorch baseline {problem}")
            return {"failed": f"python -m ser_triton.bench.baseline --variant {variant} {problem}"}
    return json.loads(out.read_text())


def run_variant(variant: str, export: dict, workload, analyzer, args) -> dict:
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.supervisor import TritonServer

    directory = args.work / "runs" / f"{variant}-{args.preset}"
    directory.mkdir(parents=True, exist_ok=True)
    server = TritonServer(export["repository"], http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), startup_timeout=900, log_path=directory / "tritonserver.log")
    started = time.perf_counter()
    with server:
        ready_seconds = time.perf_counter() - started
        from ser_triton.client.library import SERClient

        served.warm_up(SERClient(server.grpc_url), workload)
        levels = served.measure_perf_analyzer(server, analyzer, workload, args.concurrency,
                                              args.rounds * len(workload.utterances), directory,
                                              progress=not args.no_progress)
        client, answers = served.measure_client(server, workload, args.client_concurrency,
                                                progress=not args.no_progress)
        live = None
        if variant in args.streaming_variants:
            best = max(level["audio_seconds_per_s"] for level in levels.values())
            live = streaming.measure(server.grpc_url, workload, best, args.stream_seconds, args.most_streams)
        memory = served.server_memory(server)
    return {
        "description": f"`ser` ensemble ({variant}) on tritonserver 2.51.0 (Python backend + ONNX Runtime), "
                       "perf_analyzer over gRPC; client = client.library.SERClient.classify_many over gRPC",
        "deployment": deployment_of(export["repository"]),
        "server_ready_seconds": round(ready_seconds, 1),
        "concurrency": levels,
        "client": client,
        "server_memory": memory,
        **({"streaming": live} if live else {}),
        "export": export_summary(export),
        **({"precision": chosen} if (chosen := precision_summary(export)) else {}),
    }, [prediction_record(result) for result in answers]


def with_streaming(summary: dict) -> dict:
    """The summary with its streaming section where a whole run puts it: before the headline's
    keys that bench.analysis appends (so that recomputing the headline gives the file back)."""
    if "streaming" in summary or "speedup_vs_best_pytorch" not in summary:
        return summary | {"streaming": summary.get("streaming", {})}
    items = list(summary.items())
    at = [key for key, _ in items].index("speedup_vs_best_pytorch")
    return dict(items[:at] + [("streaming", {})] + items[at:])


def streaming_only(args) -> int:
    """The streaming stage alone, stored into an existing summary (see --streaming-only)."""
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.supervisor import TritonServer

    path = args.out / "summary.json"
    if not path.is_file():
        raise SystemExit(f"bench: --streaming-only stores into {path}, which is not there: run the bench first")
    summary = with_streaming(json.loads(path.read_text()))
    progress = tqdm(total=len(args.streaming_variants), desc="streaming", file=sys.stderr, disable=args.no_progress)
    workload = load_or_make(args.utterances, args.seed, args.work / "workload")
    analyzer = perf_analyzer.install(args.tools)
    for variant in args.streaming_variants:
        export = ensure_export(variant, args, workload, progress)
        load_before = report.load_average()
        directory = args.work / "runs" / f"{variant}-{args.preset}-streaming"
        directory.mkdir(parents=True, exist_ok=True)
        server = TritonServer(export["repository"], http_port=free_port(), grpc_port=free_port(),
                              metrics_port=free_port(), startup_timeout=900, log_path=directory / "tritonserver.log")
        with server:
            from ser_triton.client.library import SERClient

            served.warm_up(SERClient(server.grpc_url), workload)
            levels = served.measure_perf_analyzer(server, analyzer, workload, args.concurrency,
                                                  args.rounds * len(workload.utterances), directory,
                                                  progress=not args.no_progress)
            best = max(level["audio_seconds_per_s"] for level in levels.values())
            live = streaming.measure(server.grpc_url, workload, best, args.stream_seconds, args.most_streams)
        live |= {"throughput_audio_seconds_per_s": best, "preset": args.preset,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": report.machine(),
                 "load_average": {"before": load_before, "after": report.load_average()},
                 "measured_apart": "with --streaming-only: this entry's run, machine and date are its own"}
        summary["streaming"][variant] = live
        progress.update()
    progress.close()
    paths = report.write(summary, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--training" in argv:  # ser-train's recipes on RAVDESS: a stage of its own (bench/training.py)
        from ser_triton.bench import training
        return training.main([arg for arg in argv if arg != "--training"])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.streaming_only:
        return streaming_only(args)
    load_before = report.load_average()
    stages = ["workload", "perf_analyzer"] + [f"pytorch {v}" for v in args.pytorch_variants] + \
             [f"{v}: export" for v in args.variants] + [f"{v}: serve + measure" for v in args.variants] + \
             ["ceilings", "report"]
    progress = tqdm(stages, desc="bench", unit="stage", file=sys.stderr, disable=args.no_progress)
    stage = iter(progress)

    next(stage)
    workload_root = args.work / "workload"
    bar = tqdm(total=args.utterances, desc="speaking utterances", unit="utt", file=sys.stderr,
               disable=args.no_progress, leave=False)
    workload = load_or_make(args.utterances, args.seed, workload_root, progress=bar.update)
    bar.close()

    next(stage)
    analyzer = perf_analyzer.install(args.tools)

    pytorch, skipped = {}, {}
    for variant in args.pytorch_variants:
        next(stage)
        reason = unavailable(variant, ISA)
        if reason:
            skipped[variant] = reason
            continue
        pytorch[variant] = run_pytorch(variant, args, workload_root)
        if "failed" in pytorch[variant]:
            skipped[variant] = pytorch.pop(variant)["failed"]

    exports = {}
    for variant in args.variants:
        next(stage)
        exports[variant] = ensure_export(variant, args, workload, progress)

    systems = {analysis.BASELINE: pytorch[BASELINE_VARIANT]}
    answers = {}
    for variant in args.variants:
        next(stage)
        progress.set_postfix_str(variant)
        systems[variant], answers[variant] = run_variant(variant, exports[variant], workload, analyzer, args)

    next(stage)
    serving = {variant: systems[variant].get("precision", {}).get(
        "serving", {name: "fp32" for name in ceilings.GFLOP_PER_AUDIO_SECOND}) for variant in args.variants}
    rates = ceilings.gemm_rates({key for keys in serving.values() for key in keys.values()} | {"fp32"})

    next(stage)
    summary = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "preset": args.preset,
        "machine": report.machine() | {"perf_analyzer": analyzer.version(),
                                       "fp32_gemm_gflops_2_threads": rates["fp32"]},
        "load_average": {"before": load_before, "after": report.load_average()},
        "workload": workload.describe() | {"directory": str(workload.directory.relative_to(args.work.parent))
                                           if workload.directory.is_relative_to(args.work.parent) else str(workload.directory)},
        "speedup_vs_pytorch": {},
        "p50_latency_c1_vs_pytorch": {},
        "pytorch_variants": {name: run["concurrency"]["1"]["audio_seconds_per_s"] for name, run in pytorch.items()},
        "pytorch_variants_skipped": skipped,
        "pytorch_variant_runs": {name: run for name, run in pytorch.items() if name != BASELINE_VARIANT},
        "gemm_gflops_2_threads": rates,
        "systems": systems,
        "notes": NOTES,
    }
    if "fp32" in answers:
        summary["drift"] = {variant: drift_of.drift(answers["fp32"], answers[variant], exports[variant]["report"])
                            for variant in args.variants if variant != "fp32"}
        summary["within_drift_limits"] = {variant: not drift_of.violations(measured)
                                          for variant, measured in summary["drift"].items()}
        summary["within_drift_limits"]["fp32"] = True
        summary["drift_limits"] = dataclasses.asdict(drift_of.DRIFT_LIMITS)
    summary["ceiling_audio_seconds_per_s"] = {variant: round(ceilings.ceiling(keys, rates), 3)
                                              for variant, keys in serving.items()}
    if args.preset == "full-random":
        rate = summary["pytorch_variants"][BASELINE_VARIANT]
        summary["analysis"] = {
            "gflop_per_audio_second_estimate": GFLOP_PER_AUDIO_SECOND,
            "baseline_effective_gflops": round(rate * GFLOP_PER_AUDIO_SECOND, 1),
            "baseline_fraction_of_fp32_gemm_peak": round(rate * GFLOP_PER_AUDIO_SECOND / rates["fp32"], 3),
            "fp32_ceiling_speedup": round(rates["fp32"] / (rate * GFLOP_PER_AUDIO_SECOND), 2),
            "meaning": "an fp32 system doing the pipeline's work at this CPU's full GEMM rate (never reached: "
                       "softmax, norms, GELU and the conv front end run below it) would be fp32_ceiling_speedup "
                       "times the baseline",
        }
    summary["streaming"] = {variant: system["streaming"] for variant, system in systems.items() if "streaming" in system}
    analysis.Headline.of(summary).store(summary)
    paths = report.write(summary, args.out)
    progress.close()
    print(f"wrote {', '.join(str(path) for path in paths.values())}")
    print("speedup vs PyTorch eager fp32 (audio-s/s at best concurrency): "
          + ", ".join(f"{k} {v}x" for k, v in summary["speedup_vs_pytorch"].items())
          + "; vs the best PyTorch variant: "
          + ", ".join(f"{k} {v}x" for k, v in summary["speedup_vs_best_pytorch"].items()))
    return 0


NOTES = [
    "speedup_vs_pytorch: audio-seconds per second of the variant at its best perf_analyzer concurrency divided by "
    "PyTorch eager fp32's (one utterance at a time) from the same run; speedup_vs_best_pytorch divides by the best "
    "PyTorch variant (pytorch_variants) instead.",
    "perf_analyzer rows: one measurement of whole rounds of the workload per concurrency (--request-count), "
    "throughput and latencies from its per-request profile export (first request sent to last answer; "
    "audio-seconds = the real length of each request). Client-library rows: classify_many over the wav files.",
    "Latencies are per utterance, request to answer (perf_analyzer: client-side; PyTorch: one classify call).",
    "drift: each variant's served answers (client library, last client concurrency) against served fp32's on the "
    "whole workload; min_hidden_cosine from the export's measurement on the same workload; within_drift_limits "
    "against export.precision.DRIFT_LIMITS. Random weights make near-ties everywhere (transcript characters, "
    "emotions), so these are harsher than a trained model's drift.",
    "efficiency: audio-seconds per second at the best concurrency divided by ceiling_audio_seconds_per_s, what the "
    "variant's networks would reach at their own precision's GEMM rate (bench/ceilings.py).",
    "streaming: K streams at once, each a conversation of workload utterances with 1-2 s pauses paced in real time "
    "in 100 ms chunks; delay = the utterance's result at the client minus its end in the stream; kept_up = every "
    "stream finished within one stream's p99 delay + 1 s after its audio ended (no growing backlog); max_streams = the most "
    "streams kept up with the p90 delay within 1 s of one stream's p90; throughput_streams = the variant's best "
    "perf_analyzer audio-s/s over the conversations' speech share; efficiency = max_streams / throughput_streams.",
    "server_memory.total_peak_rss_mib adds the peak RSS (VmHWM) of tritonserver and every Python stub; "
    "shared pages count once per process, so it is an upper bound. weights_mib: each network's ONNX files on disk; "
    "peak_over_weights: total_peak_rss_mib over their sum.",
]


if __name__ == "__main__":
    sys.exit(main())
