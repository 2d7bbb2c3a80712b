"""`make serve`: starts in seconds, stops cleanly, and fails fast with a reason instead of hanging."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.ports import free_port
from serving import processes
from serving.supervisor import SHM_PREFIX, ServerError
from tests.conftest import REPO_ROOT, start_server

pytestmark = pytest.mark.server


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and b"zombie" not in status.read_bytes().lower()


def test_start_and_stop_leave_nothing_behind(tiny_repository):
    server = start_server(tiny_repository)
    with server:
        pid = server.process.pid
        assert server.ready()
        stubs = set(server.stubs())
        shm = processes.shared_memory_files(pid, SHM_PREFIX)
        assert stubs and shm  # one stub per Python model instance, each with its shared memory
    assert not alive(pid)
    assert not any(alive(stub) for stub in stubs)
    assert not any(Path("/dev/shm", name).exists() for name in shm)


def test_stopping_one_server_leaves_another_running(tiny_repository):
    """Each server removes only its own shared memory: two on one machine (replicas) coexist,
    whichever starts or stops first."""
    from tests.server_helpers import connect, infer, utterance

    first = start_server(tiny_repository).start()
    try:
        with start_server(tiny_repository) as second:
            first.stop()
            emotions, probabilities, _ = infer(connect(second, "grpc"), "grpc", utterance(1.0, 3)[None])
            assert len(emotions) == 1 and probabilities.shape == (1, 4)
    finally:
        first.stop()


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
