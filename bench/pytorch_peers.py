"""The PyTorch peers: bench/baseline.py once per PyTorch variant, each in a process of its own (so its
memory and threads are its own), and why each variant this CPU cannot run was left out.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from ser_triton.bench.baseline import BASELINE_VARIANT, unavailable
from ser_triton.bench.fingerprint import SOURCE_ROOT

PYTORCH_TIMEOUT_S = 3600
"""A PyTorch variant (torch.compile's first calls, above all) that takes longer is reported as failed."""


def run_pytorch(variant: str, args, workload_root: Path) -> dict:
    """One PyTorch variant over the workload, in a process of its own (bench/baseline.py)."""
    out = args.work / f"pytorch-{variant}-{args.preset}-n{args.utterances}.json"
    if not (args.skip_baseline and out.is_file()):
        command = [sys.executable, "-m", "ser_triton.bench.baseline", "--utterances", str(args.utterances), "--seed",
                   str(args.seed), "--workload-root", str(workload_root), "--preset", args.preset,
                   "--variant", variant, "--out", str(out)]
        if args.no_progress:
            command.append("--no-progress")
        path = os.pathsep.join(filter(None, (str(SOURCE_ROOT), os.environ.get("PYTHONPATH"))))
        env = dict(os.environ, PYTHONPATH=path)
        try:
            code = subprocess.run(command, cwd=SOURCE_ROOT, env=env, timeout=PYTORCH_TIMEOUT_S).returncode
            problem = f"exited with {code}" if code else None
        except subprocess.TimeoutExpired:
            problem = f"gave no result within {PYTORCH_TIMEOUT_S} s"
        if problem:
            if variant == BASELINE_VARIANT:
                raise SystemExit(f"bench: the PyTorch baseline {problem}")
            return {"failed": f"python -m ser_triton.bench.baseline --variant {variant} {problem}"}
    return json.loads(out.read_text())


def run_all(args, workload_root: Path, isa: list[str], progress) -> tuple[dict, dict]:
    """(measurements, skipped: why) of args.pytorch_variants, one progress stage each."""
    measured, skipped = {}, {}
    for variant in args.pytorch_variants:
        reason = unavailable(variant, isa)
        if reason:
            skipped[variant] = reason
        else:
            measured[variant] = run_pytorch(variant, args, workload_root)
            if "failed" in measured[variant]:
                skipped[variant] = measured.pop(variant)["failed"]
        progress.update()
    return measured, skipped
