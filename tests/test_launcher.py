"""`make serve`: starts in seconds, stops cleanly, and fails fast with a reason instead of hanging."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.launcher import SHM_GLOB, ServerError, free_port
from tests.conftest import REPO_ROOT, start_server

pytestmark = pytest.mark.server


def stub_processes() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"triton_python_backend_stub" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
        except OSError:
            pass
    return found


def test_start_and_stop_leave_nothing_behind(tiny_repository):
    stubs, shm = stub_processes(), set(Path("/dev/shm").glob(SHM_GLOB))
    server = start_server(tiny_repository)
    with server:
        pid = server.process.pid
        assert server.ready()
        assert stub_processes() - stubs  # one stub per Python model instance
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    assert stub_processes() - stubs == set()
    assert set(Path("/dev/shm").glob(SHM_GLOB)) - shm == set()


def serve(repository: Path, *extra: str) -> subprocess.CompletedProcess:
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    return subprocess.run([sys.executable, "-m", "serving.launcher", "--repository", str(repository), "--timeout", "60",
                           *ports, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_missing_export_says_run_make_export(tmp_path):
    done = serve(tmp_path / "nothing")
    assert done.returncode != 0
    assert "make export" in done.stderr and "Traceback" not in done.stderr


def test_occupied_port_is_named(tiny_repository):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"HTTP port {port} on 127.0.0.1 is already in use"):
            start_server(tiny_repository, http_port=port).start()


@pytest.fixture
def broken_copy(tiny_repository, tmp_path):
    copy = tmp_path / "model_repository"
    shutil.copytree(tiny_repository, copy)
    return copy


def test_corrupted_onnx_file_names_the_model(broken_copy):
    (broken_copy / "asr" / "1" / "model.onnx").write_bytes(b"this is not a protobuf" * 100)
    done = serve(broken_copy)
    assert done.returncode != 0
    assert "model 'asr' failed to load" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr.splitlines()[0]


def test_missing_tokenizer_file_names_the_model(broken_copy):
    os.remove(broken_copy / "ctc_tokenize" / "1" / "tokenizer.json")
    done = serve(broken_copy)
    assert done.returncode != 0
    assert "model 'ctc_tokenize' failed to load" in done.stderr and "tokenizer.json" in done.stderr, done.stderr
