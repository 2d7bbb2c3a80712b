"""The served variants' model repositories: each exported by `python -m ser_triton.export` into the
work folder unless a current one is there (bench/fingerprint.py), and what its export report says.
"""

import json
import subprocess
import sys
from pathlib import Path

from ser_triton.bench import ceilings
from ser_triton.bench.fingerprint import SOURCE_ROOT, fingerprint

STAMP = "bench_export.json"
EXPORT_ARGS = ""
"""The default deployment of `make export` is what is measured: dynamic batching up to 8 with no
added delay, requests batched together only while zero padding adds at most 25% work (padding
mixed lengths to the longest cost 13% audio-s/s at concurrency 4 in int8 when it was unbounded),
one ONNX Runtime thread per network (the two encoders run in parallel, one per core; 2 threads
each measured the same or worse). `--export-args` measures other settings."""


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
    current_fingerprint = fingerprint(command[2:])
    stamped = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == current_fingerprint
    current = (repository / "export_report.json").is_file() and (args.reuse_export or stamped)
    if args.re_export or not current:
        progress.set_postfix_str(f"exporting {variant} ({args.preset})")
        stamp.unlink(missing_ok=True)
        repository.parent.mkdir(parents=True, exist_ok=True)
        log_path = args.work / f"export_{variant}{suffix}.log"
        with open(log_path, "w") as handle:
            done = subprocess.run(command, cwd=SOURCE_ROOT, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text().strip().splitlines()[-10:])
            raise SystemExit(f"bench: export of {variant} failed (log: {log_path}):\n{tail}")
        stamp.write_text(json.dumps({"fingerprint": current_fingerprint, "command": command[1:]}) + "\n")
        reused = False
    else:
        reused = True
    export_report = json.loads((repository / "export_report.json").read_text())
    shown = [str(Path(a).relative_to(SOURCE_ROOT)) if a.startswith(str(SOURCE_ROOT)) else a for a in command[1:]]
    return {"repository": repository, "report": export_report, "reused": reused,
            "command": "python " + " ".join(shown)}


def deployment_of(repository: Path) -> dict:
    from ser_triton.core.model_config import read_config
    from ser_triton.core.specs import ACOUSTIC_ENCODER
    from ser_triton.serving.steps.parameters import INTRA_OP_THREADS

    config = read_config(repository / ACOUSTIC_ENCODER)
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
        "parity_max_abs_diff_onnx_vs_torch": _largest(r["networks"], "max_abs_diff_onnx_vs_torch"),
        "parity_max_abs_diff_batched_vs_alone": _largest(r["networks"], "max_abs_diff_batched_vs_alone"),
        "optimization_seconds": optimization.get("seconds"),
        "onnx_mib": {n: round(v.get("onnx_bytes", 0) / 2**20, 1) for n, v in optimization.get("networks", {}).items()},
        "graph_rewrites": {n: {k: v for k, v in e.items() if k in ("conv_to_matmul", "fused_operators")}
                           for n, e in optimization.get("networks", {}).items()},
        "fp32_rewrite_max_abs_diff": {n: max(o["max_abs_diff"] for o in e["fp32_vs_exported"].values())
                                      for n, e in optimization.get("networks", {}).items() if "fp32_vs_exported" in e},
    }


def _largest(networks: dict, key: str) -> dict:
    """Network -> the largest `key` over its outputs, in the export report's networks section."""
    return {name: max(output[key] for output in entry["outputs"].values()) for name, entry in networks.items()}


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
