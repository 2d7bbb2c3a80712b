"""`make serve`: starts in seconds, stops cleanly, and fails fast with a reason instead of hanging."""

import mmap
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ser_triton.serving import processes
from ser_triton.serving.ports import ephemeral_range, free_port, port_in_use
from ser_triton.serving.supervisor import SHM_PREFIX, ServerError, remove_orphaned_shared_memory
from tests.conftest import REPO_ROOT, start_server
from tests.server_helpers import alive, descendants, end, eventually, free_ports, launcher_command, start_launcher

pytestmark = pytest.mark.server


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


def test_shared_memory_that_no_process_maps_is_removed_at_start():
    """What servers killed together with their stubs leave in /dev/shm; the launcher removes it."""
    orphan, fresh, held = (Path("/dev/shm", f"{SHM_PREFIX}test_{uuid.uuid4().hex}") for _ in range(3))
    an_hour_ago = time.time() - 3600
    try:
        for path in (orphan, fresh, held):
            path.write_bytes(bytes(4096))
        for path in (orphan, held):
            os.utime(path, (an_hour_ago, an_hour_ago))
        with open(held, "r+b") as file, mmap.mmap(file.fileno(), 4096):
            removed = remove_orphaned_shared_memory()
        assert orphan in removed and not orphan.exists()
        assert fresh.exists() and held.exists()  # starting (not mapped yet), and in use
    finally:
        for path in (orphan, fresh, held):
            path.unlink(missing_ok=True)


def serve(repository: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(launcher_command(repository, free_ports(), *extra), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def ignore_sigint():
    """What a non-interactive shell does to a command it puts in the background (`make serve &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_launcher_killed_hard_takes_its_servers_with_it(tiny_repository, tmp_path, replicas):
    """kill -9 of `make serve` runs none of its clean-up code: tritonserver, its Python stubs and (with
    the edge's nginx end anyway, their shared memory goes, and the next launcher on the ports starts."""
    ports = free_ports()
    every_port = [ports["http"], ports["grpc"], *(ports["metrics"] + i for i in range(replicas))]
    first, _ = start_launcher(tiny_repository, ports, "--replicas", str(replicas),
                              "--log-file", str(tmp_path / "tritonserver.log"),
                              env={**os.environ, "TMPDIR": str(tmp_path)})  # its temporary folders stay behind
    family = descendants(first.pid)
    try:
        names = sorted(family.values())
        assert names.count("tritonserver") == replicas and names.count("nginx") == 2  # the edge: master and worker
        assert names.count(processes.STUB.decode()[:15]) >= 7 * replicas, names  # one per Python step at least
        shm = set().union(*(processes.shared_memory_files(pid, SHM_PREFIX)
                            for pid, name in family.items() if name == "tritonserver"))
        assert shm
        first.kill()
        first.wait()
        assert eventually(lambda: not any(alive(pid) for pid in family)), \
            {pid: name for pid, name in family.items() if alive(pid)}
        assert not any(Path("/dev/shm", name).exists() for name in shm)
        assert not any(port_in_use("127.0.0.1", port) for port in every_port)
    finally:
        end(first, family)
    # as a script's `make serve &` starts it; the server's log on the launcher's stdout (containers)
    second, said = start_launcher(tiny_repository, ports, "--replicas", str(replicas), "--log-file", "-",
                                  preexec_fn=ignore_sigint)
    family = descendants(second.pid)
    try:
        assert said.count("Started GRPCInferenceService at") == replicas, said
        second.send_signal(signal.SIGINT)  # taken back by the launcher: a clean stop
        assert second.wait(60) == 0, second.communicate()[0]
        assert not any(alive(pid) for pid in family)
    finally:
        end(second, family)


def test_missing_export_says_run_make_export(tmp_path):
    done = serve(tmp_path / "nothing")
    assert done.returncode == 1  # make serve: one message, exit 1
    assert "make export" in done.stderr and "Traceback" not in done.stderr


def test_free_ports_lie_outside_the_range_outgoing_connections_take(monkeypatch):
    """Port 0 hands out ephemeral ports, which any client's connection may take before the server binds them."""
    low, high = ephemeral_range()
    given = [free_port() for _ in range(50)]
    assert len(set(given)) == len(given)
    assert not any(low <= port <= high for port in given), (low, high, given)
    with socket.socket() as busy:  # a taken port is never given
        busy.bind(("127.0.0.1", given[0] + 1 if given[0] + 1 < low else given[0] - 1))
        taken = busy.getsockname()[1]
        monkeypatch.setattr("ser_triton.serving.ports.random.choice", lambda candidates: taken)
        with pytest.raises(OSError, match="no free port"):
            free_port()


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
    assert done.returncode == 1  # make serve: one message, exit 1
    assert "model 'asr' failed to load" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr.splitlines()[0]


def test_missing_tokenizer_file_names_the_model(broken_copy):
    os.remove(broken_copy / "ctc_tokenize" / "1" / "tokenizer.json")
    done = serve(broken_copy)
    assert done.returncode == 1  # make serve: one message, exit 1
    assert "model 'ctc_tokenize' failed to load" in done.stderr and "tokenizer.json" in done.stderr, done.stderr
