"""Start the real Triton server that ships in the `nvidia-pytriton` wheel, on loopback, and stop it.

    python -m serving.launcher --repository model_repository      # what `make serve` runs

It waits until every model is ready and says so. A missing export, a port in use, or a model that
fails to load ends it with one clear message and a non-zero exit instead of a hang; stopping it
(Ctrl-C, or leaving the `with` block) shuts the server down cleanly and removes any shared memory
its Python stubs leave behind.

A Python-backend step whose stub process dies (crash, OOM kill) stays "not healthy" in Triton
until the model is reloaded. The server runs with explicit model control, and a watchdog notices
a missing stub, says which model, and reloads it (unload + load through the repository API).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from client.contract import ENSEMBLE

SHM_GLOB = "triton_python_backend_shm_*"
FAILED_MODEL = re.compile(r"failed to load '([^']+)' version \d+: (.*)")


class ServerError(RuntimeError):
    """The server could not be started; the message says why and what to do."""


def wheel_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServerError("the nvidia-pytriton wheel is not installed: run `make setup`") from None
    return Path(pytriton.__file__).parent / "tritonserver"


def backend_directory(root: Path, into: Path) -> Path:
    """A backends folder whose python/ holds the backend library, its utils and the stub for this
    interpreter (the wheel's own python/ lacks the stub)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends/python/libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends/python/triton_python_backend_utils.py",
        "triton_python_backend_stub": root / f"python_backend_stubs/{version}/triton_python_backend_stub",
    }
    python = into / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise ServerError(f"{source} is missing from the nvidia-pytriton wheel (Python {version})")
        link = python / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return into


def process_memory_mib(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of one process, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmHWM", "VmRSS")}
    return {"peak_rss_mib": round(found["VmHWM"]), "rss_mib": round(found["VmRSS"])}


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class TritonServer:
    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    startup_timeout: float = 120.0
    log_path: Path | None = None
    extra_args: list = field(default_factory=list)
    watchdog_seconds: float | None = 2.0
    """How often to look for dead Python stubs and reload their models; None: never."""

    def __post_init__(self):
        self.repository = Path(self.repository).resolve()
        self.process: subprocess.Popen | None = None
        self._work = tempfile.TemporaryDirectory(prefix="ser-triton-")
        self.log_path = Path(self.log_path or Path(self._work.name) / "tritonserver.log")
        self._shm_before: set[str] = set()
        self._stopping = threading.Event()
        self.reloads: list[str] = []

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def check_can_start(self) -> None:
        if not (self.repository / ENSEMBLE / "config.pbtxt").is_file():
            raise ServerError(f"no exported model repository at {self.repository}: run `make export` "
                              "(or `make export PRESET=tiny` offline) first")
        for what, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            if port_in_use(self.host, port):
                raise ServerError(f"{what} port {port} on {self.host} is already in use (another server "
                                  "running?): stop it, or choose other ports (HTTP_PORT=, GRPC_PORT=, METRICS_PORT=)")

    def command(self, backends: Path) -> list[str]:
        return [
            str(wheel_root() / "bin/tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
            "--exit-on-error=true", "--strict-readiness=true",
            "--model-control-mode=explicit", "--load-model=*",
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=16777216",
            *self.extra_args,
        ]

    def environment(self) -> dict:
        env = dict(os.environ)
        # The stub's embedded Python finds its packages through the first python3 on PATH (this
        # venv) and must bind this interpreter's libpython, not the system's.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
        for secret in [k for k in env if "TOKEN" in k.upper() or "SECRET" in k.upper()]:
            env.pop(secret)
        return env

    def start(self) -> "TritonServer":
        self.check_can_start()
        self._shm_before = set(self._shm_files())
        backends = backend_directory(wheel_root(), Path(self._work.name) / "backends")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(backends), stdout=log, stderr=subprocess.STDOUT,
                                        env=self.environment(), start_new_session=True)
        log.close()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        if self.watchdog_seconds:
            self._stopping.clear()
            threading.Thread(target=self._watch_stubs, name="stub-watchdog", daemon=True).start()
        return self

    def python_models(self) -> list[str]:
        return sorted(p.parent.name for p in self.repository.glob("*/config.pbtxt")
                      if 'backend: "python"' in p.read_text())

    def stubs(self) -> dict[int, str]:
        """pid -> model, for the Python stub processes of this server."""
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit():
                    continue
                arguments = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int(re.search(rb"PPid:\s+(\d+)", (proc / "status").read_bytes()).group(1))
            except (OSError, AttributeError):
                continue
            if parent == self.process.pid and arguments[0].endswith(b"triton_python_backend_stub"):
                found[int(proc.name)] = Path(arguments[1].decode(errors="replace")).parent.parent.name
        return found

    def memory(self) -> dict[str, dict]:
        """Resident memory of tritonserver and of each of its Python stubs ("stub:<model>"), MiB."""
        processes = {"tritonserver": process_memory_mib(self.process.pid)}
        for pid, model in self.stubs().items():
            try:
                processes[f"stub:{model}"] = process_memory_mib(pid)
            except (OSError, AttributeError):  # the stub exited meanwhile
                continue
        return processes

    def reload(self, model: str) -> None:
        for action in ("unload", "load"):
            request = urllib.request.Request(
                f"http://{self.http_url}/v2/repository/models/{model}/{action}", data=b"{}", method="POST")
            urllib.request.urlopen(request, timeout=120).close()

    def _watch_stubs(self) -> None:
        models = self.python_models()
        while not self._stopping.wait(self.watchdog_seconds):
            for model in sorted(set(models) - set(self.stubs().values())):
                if self._stopping.is_set():
                    return
                print(f"serve: model '{model}' is unhealthy (its Python stub process exited); reloading it",
                      file=sys.stderr, flush=True)
                try:
                    self.reload(model)
                    self.reloads.append(model)
                    print(f"serve: model '{model}' reloaded", file=sys.stderr, flush=True)
                except OSError as error:
                    print(f"serve: reloading model '{model}' failed: {error}", file=sys.stderr, flush=True)

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(self.failure_reason(f"tritonserver exited with code {self.process.returncode}"))
            if self.ready():
                return
            time.sleep(0.2)
        raise ServerError(self.failure_reason(f"tritonserver was not ready after {self.startup_timeout:.0f} s"))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def failure_reason(self, headline: str) -> str:
        failures = {}
        for model, reason in FAILED_MODEL.findall(self.log_text()):
            failures.setdefault(model, reason.split("\\n")[0].strip())  # drop the Python traceback
        if failures:
            details = "; ".join(f"model '{m}' failed to load: {r}" for m, r in failures.items())
            return f"{headline}: {details} (full log: {self.log_path}; re-export with `make export`)"
        tail = "\n".join(self.log_text().strip().splitlines()[-15:])
        return f"{headline}. Last lines of the log ({self.log_path}):\n{tail}"

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        for leftover in set(self._shm_files()) - self._shm_before:
            Path("/dev/shm", leftover).unlink(missing_ok=True)

    @staticmethod
    def _shm_files() -> list[str]:
        return [p.name for p in Path("/dev/shm").glob(SHM_GLOB)]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self._work.cleanup()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    parser.add_argument("--log-file", type=Path, default=Path("build/tritonserver.log"))
    args = parser.parse_args(argv)
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                          args.timeout, args.log_file.resolve())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        server.start()
    except ServerError as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130
    print(f"ready: ensemble '{ENSEMBLE}' on HTTP {server.http_url}, gRPC {server.grpc_url}, "
          f"metrics {server.metrics_url} (log: {server.log_path}). Ctrl-C stops it.", flush=True)
    try:
        while not stop and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    code = server.process.returncode if server.process.poll() is not None else 0
    server.stop()
    if code:
        print(f"make serve: tritonserver stopped with code {code}; log: {server.log_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
