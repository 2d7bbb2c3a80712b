"""`make demo` end to end: with no model hub it says so, falls back to tiny, and classifies the sample."""

import os
import subprocess
import sys

from client.contract import LABELS
from serving.ports import free_port
from tests.conftest import REPO_ROOT


def test_demo_falls_back_to_tiny_and_classifies_the_sample(tmp_path):
    ports = [str(free_port()) for _ in range(3)]
    done = subprocess.run(
        [sys.executable, "-m", "serving.demo", "--repository", str(tmp_path / "repo"),
         "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # no hub: the download fails at once
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not be downloaded" in done.stderr and "PRESET=tiny" in done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("samples/speech.wav"))
    assert row.split()[1] in LABELS
    assert "server stopped" in done.stdout
