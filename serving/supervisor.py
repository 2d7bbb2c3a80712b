"""Process supervision of one bundled tritonserver: start, wait until ready, watch, stop.

Start fails fast with one clear message (missing export, port in use, a model that fails to
load) instead of hanging. The server's control plane is closed to every client (serving.admin):
it runs with `--model-control-mode=none`, so nothing loads or unloads a model at run time. A
Python-backend step whose stub process dies (crash, OOM kill) stays "not healthy" in Triton, and
without model control it cannot be reloaded: `failure()` says which step died, and whoever
supervises the server (serving.replicas, every half second under `make serve`) restarts the whole
server. An operator's admin key (`admin_key`) opens the control plane to that key, with explicit
model control. The server shares nothing with other local users (serving.isolation: umask 077, a
private /dev/shm); its log is readable by its user alone, and a restarted server appends to it.
Stopping shuts the server down cleanly and removes any shared memory its Python stubs leave
behind. The server dies with the process that started it (serving.lifetime): a launcher killed
hard leaves no server holding the ports.
"""

import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ser_triton.core.contract import ENSEMBLE, GRPC_PORT, HTTP_PORT, METRICS_PORT
from ser_triton.serving import admin, bundled, isolation, lifetime, processes, server_log
from ser_triton.serving.ports import Addresses, port_in_use

SHM_PREFIX = "triton_python_backend_shm_"


class ServerError(RuntimeError):
    """The server could not be started; the message says why and what to do."""


def ready(http_url: str, tls: bool = False) -> bool:
    """Whether the Triton server (or the edge in front of it) at host:port is ready: every model
    loaded. `tls`: the edge serves HTTPS (its certificate is not checked: this asks our own child)."""
    context = ssl._create_unverified_context() if tls else None  # noqa: S323 - our own child, on its address
    try:
        with urllib.request.urlopen(f"{'https' if tls else 'http'}://{http_url}/v2/health/ready", timeout=1,
                                    context=context) as reply:
            return reply.status == 200
    except OSError:
        return False


def wait_until_ready(what: str, process: subprocess.Popen, http_url: str, timeout: float, log_path: Path,
                     tls: bool = False) -> None:
    """Until the ensemble is ready at http_url; ServerError, with the reason the log gives, if
    `process` (serving there) exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(server_log.failure_reason(f"{what} {processes.how_it_ended(process.returncode)}", log_path))
        if ready(http_url, tls):
            return
        time.sleep(0.2)
    raise ServerError(server_log.failure_reason(f"{what} was not ready after {timeout:.0f} s", log_path))


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """ServerError naming the first of these ports (what -> number) that is in use."""
    for what, port in ports.items():
        if port_in_use(host, port):
            raise ServerError(f"{what} port {port} on {host} is already in use (another server running?): "
                              "stop it, or choose other ports (HTTP_PORT=, GRPC_PORT=, METRICS_PORT=)")


def check_exported(repository: Path) -> None:
    """ServerError saying what to do where `repository` holds no exported ensemble."""
    if not (Path(repository) / ENSEMBLE / "config.pbtxt").is_file():
        raise ServerError(f"no exported model repository at {Path(repository).resolve()}: run `make export` "
                          "(or `make export PRESET=tiny` offline) first")


def remove_orphaned_shared_memory(min_age: float = 60.0) -> list[Path]:
    """Remove the Python backend's shared-memory files that no process maps any more: left by
    servers killed together with their stubs (SIGKILL to the whole group, the OOM killer), which
    nobody else removes. Only this user's files older than `min_age` seconds (a starting server
    maps its files at once); returns what was removed."""
    mapped = processes.mapped_files(processes.every_process(), SHM_PREFIX)
    removed = []
    for path in Path("/dev/shm").glob(f"{SHM_PREFIX}*"):
        try:
            status = path.stat()
        except OSError:
            continue
        if status.st_uid == os.getuid() and path.name not in mapped and time.time() - status.st_mtime > min_age:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@dataclass
class TritonServer(Addresses):
    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    startup_timeout: float = 120.0
    log_path: Path | None = None
    extra_args: list = field(default_factory=list)
    metrics_host: str | None = None
    """Where the metrics listen (Prometheus scrapes each server); None: on `host`."""
    admin_key: str | None = field(default=None, repr=False)
    """None: the control plane is closed to everyone and no model is loaded or unloaded at run time.
    A key (an operator's opt-in): the control plane answers requests carrying it, with explicit
    model control; every local user can read it in the process list (serving.admin.KEY_VISIBLE)."""

    def __post_init__(self):
        self.repository = Path(self.repository).resolve()
        self.process: subprocess.Popen | None = None
        self._work = tempfile.TemporaryDirectory(prefix="ser-triton-")
        self.log_path = Path(self.log_path or Path(self._work.name) / "tritonserver.log")
        self._shm_files: set[str] = set()
        """The Python backend's shared-memory files this server mapped, removed when it stops
        (a killed server leaves them behind); never another server's."""
        self._python_models: set[str] = set()
        """The Python-backend models, each with a stub process once the server is ready."""
        self._launches = 0

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_host or self.host}:{self.metrics_port}/metrics"

    def check_can_start(self) -> None:
        check_exported(self.repository)
        check_ports_free(self.host, {"HTTP": self.http_port, "gRPC": self.grpc_port})
        check_ports_free(self.metrics_host or self.host, {"metrics": self.metrics_port})

    def command(self, backends: Path) -> list[str]:
        return [
            str(bundled.tritonserver_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.metrics_host or self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", *bundled.CPU_FLAGS,
            "--exit-on-error=true", "--strict-readiness=true",
            # none: no model is loaded or unloaded at run time, by anyone; explicit for an operator's key
            *(["--model-control-mode=none"] if self.admin_key is None
              else ["--model-control-mode=explicit", "--load-model=*"]),
            *admin.restricting_flags(self.admin_key),
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=16777216",
            *self.extra_args,
        ]

    def start(self) -> "TritonServer":
        return self.launch().await_ready()

    def launch(self) -> "TritonServer":
        """Start tritonserver without waiting for it (replicas load side by side). It gets SIGTERM
        when this process dies, however it dies: call this from the main thread."""
        self.check_can_start()
        try:
            backends = bundled.backend_directory(Path(self._work.name) / "backends")
            command = self.command(backends)
        except bundled.BundledServerMissing as error:
            raise ServerError(str(error)) from None
        # a restarted server appends to the log of the one it replaces
        log = None if self.log_path == server_log.STDOUT else isolation.private_file(self.log_path, self._launches > 0)
        self._launches += 1
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env=bundled.server_environment(), start_new_session=True,
                                        preexec_fn=isolation.confined(lifetime.ends_with_parent()))
        if log is not None:
            log.close()
        return self

    def await_ready(self) -> "TritonServer":
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self._note_shared_memory()
        self._python_models = set(self.python_models())
        return self

    def exit_reason(self) -> str | None:
        """None while tritonserver runs; once it has exited, what to tell the user."""
        process = self.process
        if process is None or process.poll() is None:
            return None
        return f"tritonserver {processes.how_it_ended(process.returncode)}; log: {server_log.name(self.log_path)}"

    def failure(self) -> str | None:
        """None while the server serves every model; otherwise why not: it exited, or the stub
        process of a Python step died (which only a restart mends: no model control)."""
        reason = self.exit_reason()
        if reason is not None or self.process is None:
            return reason
        dead = sorted(self._python_models - set(self.stubs().values()))
        if dead:
            return f"the Python step of model '{dead[0]}' died (its stub process exited)"
        return None

    def wait_until_ready(self) -> None:
        wait_until_ready("tritonserver", self.process, self.http_url, self.startup_timeout, self.log_path)

    def ready(self) -> bool:
        return ready(self.http_url)

    def python_models(self) -> list[str]:
        return sorted(p.parent.name for p in self.repository.glob("*/config.pbtxt")
                      if 'backend: "python"' in p.read_text())

    def stubs(self) -> dict[int, str]:
        """pid -> model, for this server's Python stub processes."""
        return processes.stubs(self.process.pid)

    def memory(self) -> dict[str, dict]:
        """Resident memory of tritonserver and of each of its Python stubs ("stub:<model>"), MiB."""
        return processes.server_memory(self.process.pid)

    def _note_shared_memory(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._shm_files |= processes.shared_memory_files(self.process.pid, SHM_PREFIX)

    def stop(self, timeout: float = 30.0) -> None:
        self._note_shared_memory()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            processes.kill_leftovers(self.process.pid)
        self.process = None
        self._python_models = set()
        for leftover in self._shm_files:
            Path("/dev/shm", leftover).unlink(missing_ok=True)
        self._shm_files = set()

    def __enter__(self):
        return self.start()

    def close(self) -> None:
        self.stop()
        self._work.cleanup()

    def __exit__(self, *exc):
        self.close()
