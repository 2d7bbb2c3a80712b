"""`make bench`: the served `ser` ensemble against the plain PyTorch pipeline, on the same utterances.

    python -m bench                    # full run: 40 utterances, fp32 and int8, writes bench/results/
    python -m bench --quick            # a few minutes (once the exports exist): 12 utterances
    python -m bench --preset tiny --quick --out /tmp/results --work /tmp/work     # what the test runs

1. workload: seeded espeak-ng utterances, IEMOCAP-like lengths (bench/workload.py), cached;
2. baseline: model.reference.ResearchPipeline, PyTorch eager, one utterance at a time, 2 threads;
3. for each variant (fp32, int8): `python -m export --preset P --precision X` into the work folder
   (reused while the export code and arguments are unchanged), the bundled tritonserver on free
   loopback ports, perf_analyzer at each concurrency over gRPC, then the client library end to
   end, and the server's peak memory;
4. bench/results/summary.json, summary.md and throughput_latency.png.
"""

import argparse
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

from bench import report, served
from bench.workload import WORK, load_or_make
from serving import perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("fp32", "int8")
STAMP = "bench_export.json"
EXPORT_ARGS = ""
"""The default deployment of `make export` is what is measured: dynamic batching up to 8 with no
added delay, requests batched together only while zero padding adds at most 25% work (padding
mixed lengths to the longest cost 13% audio-s/s at concurrency 4 in int8 when it was unbounded),
one ONNX Runtime thread per network (the two encoders run in parallel, one per core; 2 threads
each measured the same or worse). `--export-args` measures other settings."""
GFLOP_PER_AUDIO_SECOND = 75.0
"""HuBERT-large + wav2vec2-large (~36 GFLOP per audio-second each) + BERT-base on ~15 tokens:
shared/reference/physics.md. Random-weight transcripts are longer, so this is a lower bound."""
log = logging.getLogger("bench")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer utterances, one round per level")
    parser.add_argument("--preset", choices=("full-random", "tiny"), default="full-random",
                        help="model size (full-random: full-size networks with random weights)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: fp32,int8")
    parser.add_argument("--concurrency", default="1,2,4,8", help="perf_analyzer concurrency levels")
    parser.add_argument("--client-concurrency", default=None,
                        help="client-library concurrency levels (default 1,4; quick: 4)")
    parser.add_argument("--utterances", type=int, default=None, help="workload size (default 40; quick: 12)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="perf_analyzer requests per level, in rounds of the workload (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-args", default=EXPORT_ARGS,
                        help=f"extra `python -m export` arguments, quoted (default: {EXPORT_ARGS!r})")
    parser.add_argument("--reuse-export", action="store_true",
                        help="use existing exports even if the export code changed since")
    parser.add_argument("--re-export", action="store_true", help="export again even if an export is current")
    parser.add_argument("--skip-baseline", action="store_true", help="reuse the baseline of the last run in --work")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where summary.* go (default bench/results)")
    parser.add_argument("--work", type=Path, default=WORK, help="cache: workload, exports, raw measurements")
    parser.add_argument("--tools", type=Path, default=perf_analyzer.DEFAULT_HOME,
                        help="where perf_analyzer is installed (default: the one make setup installs)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.client_concurrency = [int(c) for c in (args.client_concurrency or ("4" if args.quick else "1,4")).split(",") if c]
    args.utterances = args.utterances or (12 if args.quick else 40)
    args.rounds = args.rounds or 1
    return args


# ---------------------------------------------------------------- exports


def _fingerprint(command: list[str]) -> str:
    digest = hashlib.sha256(json.dumps(command).encode())
    for folder in (ROOT / "model", ROOT / "export", ROOT / "serving" / "steps", ROOT / "client"):
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_export(variant: str, args, progress) -> dict:
    """The variant's model repository, exported unless a current one is there; its export report.

    The export runs as `python -m export`, in a process of its own, so that the peak memory its
    report gives is the export's alone, as a user running `make export` sees it."""
    suffix = "" if args.preset == "full-random" else f"-{args.preset}"
    repository = args.work / f"repo_{variant}{suffix}"
    command = [sys.executable, "-m", "export", "--preset", args.preset, "--out", str(repository),
               "--precision", variant, *args.export_args.split()]
    stamp = repository / STAMP
    fingerprint = _fingerprint(command[2:])
    current = (repository / "export_report.json").is_file() and (
        args.reuse_export or stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint)
    if args.re_export or not current:
        progress.set_postfix_str(f"exporting {variant} ({args.preset})")
        stamp.unlink(missing_ok=True)
        repository.parent.mkdir(parents=True, exist_ok=True)
        log_path = args.work / f"export_{variant}{suffix}.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
        with open(log_path, "w") as handle:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
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
    from export.repository import read_config
    from export.specs import ACOUSTIC_ENCODER
    from serving.steps.parameters import INTRA_OP_THREADS

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


def drift_summary(export: dict) -> dict | None:
    optimization = export["report"].get("optimization", {})
    if optimization.get("precision", "fp32") == "fp32":
        return None
    networks = optimization.get("networks", {})
    return {
        "against": "the fp32 export (ONNX Runtime), on the export's parity utterances",
        "chain": optimization.get("chain_drift_vs_fp32", {}),
        "min_cosine": {n: round(min(o["min_cosine"] for o in e["int8_vs_fp32"].values()), 6)
                       for n, e in networks.items() if "int8_vs_fp32" in e},
        "max_abs_diff": {n: max(o["max_abs_diff"] for o in e["int8_vs_fp32"].values())
                         for n, e in networks.items() if "int8_vs_fp32" in e},
    }


# ---------------------------------------------------------------- the run


def run_baseline(args, workload_root: Path) -> dict:
    out = args.work / f"baseline-{args.preset}-n{args.utterances}.json"
    if not (args.skip_baseline and out.is_file()):
        command = [sys.executable, "-m", "bench.baseline", "--utterances", str(args.utterances), "--seed",
                   str(args.seed), "--workload-root", str(workload_root), "--preset", args.preset, "--out", str(out)]
        if args.no_progress:
            command.append("--no-progress")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
        done = subprocess.run(command, cwd=ROOT, env=env)
        if done.returncode != 0:
            raise SystemExit(f"bench: the PyTorch baseline failed (rc {done.returncode})")
    return json.loads(out.read_text())


def run_variant(variant: str, export: dict, workload, analyzer, args) -> dict:
    from serving.ports import free_port
    from serving.supervisor import TritonServer

    directory = args.work / "runs" / f"{variant}-{args.preset}"
    directory.mkdir(parents=True, exist_ok=True)
    server = TritonServer(export["repository"], http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), startup_timeout=900, log_path=directory / "tritonserver.log")
    started = time.perf_counter()
    with server:
        ready_seconds = time.perf_counter() - started
        from client.library import SERClient

        served.warm_up(SERClient(server.grpc_url), workload)
        levels = served.measure_perf_analyzer(server, analyzer, workload, args.concurrency,
                                              args.rounds * len(workload.utterances), directory,
                                              progress=not args.no_progress)
        client = served.measure_client(server, workload, args.client_concurrency, progress=not args.no_progress)
        memory = served.server_memory(server)
    return {
        "description": f"`ser` ensemble ({variant}) on tritonserver 2.51.0 (Python backend + ONNX Runtime), "
                       "perf_analyzer over gRPC; client = client.library.SERClient.classify_many over gRPC",
        "deployment": deployment_of(export["repository"]),
        "server_ready_seconds": round(ready_seconds, 1),
        "concurrency": levels,
        "client": client,
        "server_memory": memory,
        "export": export_summary(export),
        **({"drift": drift} if (drift := drift_summary(export)) else {}),
    }


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = report.load_average()
    stages = ["workload", "perf_analyzer", "baseline"] + [f"{v}: export" for v in args.variants] + \
             [f"{v}: serve + measure" for v in args.variants] + ["report"]
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

    next(stage)
    baseline = run_baseline(args, workload_root)

    exports = {}
    for variant in args.variants:
        next(stage)
        exports[variant] = ensure_export(variant, args, progress)

    systems = {report.BASELINE: baseline}
    for variant in args.variants:
        next(stage)
        progress.set_postfix_str(variant)
        systems[variant] = run_variant(variant, exports[variant], workload, analyzer, args)

    next(stage)
    summary = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "preset": args.preset,
        "machine": report.machine() | {"perf_analyzer": analyzer.version(),
                                       "fp32_gemm_gflops_2_threads": report.gemm_peak_gflops()},
        "load_average": {"before": load_before, "after": report.load_average()},
        "workload": workload.describe() | {"directory": str(workload.directory.relative_to(args.work.parent))
                                           if workload.directory.is_relative_to(args.work.parent) else str(workload.directory)},
        "speedup_vs_pytorch": {},
        "p50_latency_c1_vs_pytorch": {},
        "systems": systems,
        "notes": [
            "speedup_vs_pytorch: audio-seconds per second of the variant at its best perf_analyzer concurrency "
            "divided by the PyTorch baseline's (sequential, one utterance at a time) from the same run.",
            "perf_analyzer rows: one measurement of whole rounds of the workload per concurrency (--request-count), "
            "throughput and latencies from its per-request profile export (first request sent to last answer; "
            "audio-seconds = the real length of each request). Client-library rows: classify_many over the wav files.",
            "Latencies are per utterance, request to answer (perf_analyzer: client-side; baseline: one "
            "classify call).",
            "server_memory.total_peak_rss_mib adds the peak RSS (VmHWM) of tritonserver and every Python stub; "
            "shared pages count once per process, so it is an upper bound.",
        ],
    }
    if args.preset == "full-random" and "1" in baseline["concurrency"]:
        rate = baseline["concurrency"]["1"]["audio_seconds_per_s"]
        peak = summary["machine"]["fp32_gemm_gflops_2_threads"]
        summary["analysis"] = {
            "gflop_per_audio_second_estimate": GFLOP_PER_AUDIO_SECOND,
            "baseline_effective_gflops": round(rate * GFLOP_PER_AUDIO_SECOND, 1),
            "baseline_fraction_of_fp32_gemm_peak": round(rate * GFLOP_PER_AUDIO_SECOND / peak, 3),
            "fp32_ceiling_speedup": round(peak / (rate * GFLOP_PER_AUDIO_SECOND), 2),
            "meaning": "an fp32 system doing the pipeline's work at this CPU's full GEMM rate (never reached: "
                       "softmax, norms, GELU and the conv front end run below it) would be fp32_ceiling_speedup "
                       "times the baseline",
        }
    paths = report.write(summary, args.out)
    progress.close()
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    print("speedup vs PyTorch (audio-s/s at best concurrency): "
          + ", ".join(f"{k} {v}x" for k, v in summary["speedup_vs_pytorch"].items())
          + "; p50 latency at c=1 vs PyTorch: "
          + ", ".join(f"{k} {v}" for k, v in summary["p50_latency_c1_vs_pytorch"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
