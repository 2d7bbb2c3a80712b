"""The commands users type, from .venv/bin as `make setup` installs them: `tritonserver` serving the
tiny export exactly as in a Triton container, `perf_analyzer` measuring it with inputs made by
`python -m ser_triton.bench.perf_input` from audio files, and `make steps` refreshing a repository."""

import filecmp
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ser_triton import samples
from ser_triton.core.contract import ENSEMBLE
from ser_triton.export import repository
from ser_triton.core.model_config import read_config
from ser_triton.core import specs
from ser_triton.export.refresh import main as refresh_main
from ser_triton.serving.ports import free_port
from ser_triton.serving.supervisor import ready
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


@pytest.mark.server
def test_tritonserver_and_perf_analyzer_commands(tiny_repository, tmp_path):
    perf_input = tmp_path / "perf_input.json"
    made = subprocess.run([sys.executable, "-m", "ser_triton.bench.perf_input",
                           *map(str, samples.sentences()), "-o", str(perf_input)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    entries = json.loads(perf_input.read_text())["data"]
    assert len(entries) == 4 and all(e["AUDIO"]["shape"][0] > 16000 for e in entries)

    http, grpc, metrics = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        [str(BIN / "tritonserver"), f"--model-repository={tiny_repository}", f"--http-port={http}",
         f"--grpc-port={grpc}", f"--metrics-port={metrics}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready(f"127.0.0.1:{http}") and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert ready(f"127.0.0.1:{http}"), server.stdout.read() if server.poll() is not None else "not ready in 120 s"
        measured = subprocess.run(
            [str(BIN / "perf_analyzer"), "-m", ENSEMBLE, "-u", f"127.0.0.1:{grpc}", "-i", "grpc",
             "--input-data", str(perf_input), "--concurrency-range", "2", "--request-count", "8"],
            capture_output=True, text=True, timeout=300)
        assert measured.returncode == 0, measured.stdout[-2000:] + measured.stderr[-2000:]
        assert "Concurrency: 2, throughput:" in measured.stdout
        assert "Successful request count: 8" in measured.stdout or "Request count: 8" in measured.stdout
        # unlike the Triton container's, this server listens on loopback and keeps its control plane closed
        flags = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        assert {f"--{name}-address=127.0.0.1" for name in ("http", "grpc", "metrics")} <= set(flags)
        with httpclient.InferenceServerClient(f"127.0.0.1:{http}") as client:
            with pytest.raises(InferenceServerException, match="restricted"):
                client.unload_model(ENSEMBLE)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.update_log_settings({"log_verbose_level": 1})
            assert client.is_model_ready(ENSEMBLE)
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output[-2000:]


def test_perf_input_reports_unreadable_files(tmp_path):
    (tmp_path / "notes.wav").write_text("not audio")
    done = subprocess.run([sys.executable, "-m", "ser_triton.bench.perf_input", str(tmp_path / "notes.wav"),
                           str(tmp_path / "missing.flac"), "-o", str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and not (tmp_path / "out.json").exists()
    assert "notes.wav: not a readable audio file" in done.stderr and "missing.flac: no such file" in done.stderr
    assert "Traceback" not in done.stderr


def test_make_steps_refreshes_configs_and_steps_and_keeps_the_networks(tiny_repository, tmp_path, capsys):
    copy = tmp_path / "repository"
    shutil.copytree(tiny_repository, copy)
    step_copy = repository.model_directory(copy, specs.CTC_TOKENIZE) / "steps" / "text.py"
    step_copy.write_text("# an old copy of the step\n")
    network = repository.network_file(copy, specs.ASR)
    stamp = network.stat().st_mtime_ns

    assert refresh_main(["--repository", str(copy), "--max-batch-size", "4"]) == 0
    assert "networks kept as exported" in capsys.readouterr().out
    assert filecmp.cmp(step_copy, REPO_ROOT / "serving" / "steps" / "text.py", shallow=False)
    assert network.stat().st_mtime_ns == stamp
    for name in specs.ONNX_NETWORKS + specs.PYTHON_STEPS:
        assert read_config(copy / name / "config.pbtxt").max_batch_size == 4
    report = json.loads((copy / "export_report.json").read_text())
    assert report["deployment"]["max_batch_size"] == 4
    assert report["networks"] == json.loads((tiny_repository / "export_report.json").read_text())["networks"]


def test_make_steps_without_an_export_says_what_to_do(tmp_path, capsys):
    assert refresh_main(["--repository", str(tmp_path)]) == 1
    assert "run `make export` first" in capsys.readouterr().err
