"""`make demo` end to end: with no model hub it says so, falls back to tiny, and classifies the sample."""

import os
import subprocess
import sys

from ser_triton.core.contract import LABELS
from ser_triton.serving.ports import free_port
from tests.conftest import REPO_ROOT


def test_demo_falls_back_to_tiny_and_classifies_the_sample(tmp_path):
    """The two commands of `make demo`, as its recipe runs them."""
    repository = str(tmp_path / "repo")
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no hub: the download fails at once
    exported = subprocess.run([sys.executable, "-m", "ser_triton.export", "--fallback-preset", "tiny", "--out",
                               repository], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=offline)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "could not be downloaded" in exported.stderr and "PRESET=tiny" in exported.stderr
    ports = [str(free_port()) for _ in range(3)]
    done = subprocess.run(
        [sys.executable, "-m", "ser_triton.serving.demo", "--repository", repository,
         "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=offline)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("speech.wav"))
    assert row.split()[1] in LABELS
    assert "server stopped" in done.stdout


def test_a_missing_repository_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ser_triton.serving.demo", "--repository", str(tmp_path / "none")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "make export" in done.stderr and "Traceback" not in done.stderr
