"""The load balancer of the local replica set: NGINX in front of N tritonserver replicas.

Its config is serving/nginx.conf.template filled in with the replicas' ports: HTTP requests
through `proxy_pass`, gRPC (HTTP/2) through `grpc_pass`, each to a live replica, retried on the
next one when a replica fails. NGINX runs in the foreground as a child of this process (and dies
with it), with every file it writes in its own work folder; it comes from the system's packages
(`make setup` installs the Debian package `nginx` where it is missing and it can).
"""

import os
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path

from serving import lifetime, processes, server_log
from serving.supervisor import ServerError, TritonServer, check_ports_free, wait_until_ready

TEMPLATE = Path(__file__).with_name("nginx.conf.template")

NAME = "nginx (the replicas' load balancer)"

FAIL_TIMEOUT = 10.0
"""Seconds a replica stays out of the rotation after a failed request; then one request tries it again."""


class _Template(string.Template):
    delimiter = "@"  # nginx uses $ for its own variables


def nginx_binary() -> Path:
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise ServerError("nginx is not installed; the replica set needs it as its load balancer: run `make setup` "
                          "as root (it installs the Debian package), or `apt-get install nginx`")
    return Path(found)


class Balancer:
    """NGINX where `front` would listen (its host, HTTP and gRPC ports), balancing over the replicas."""

    def __init__(self, front: TritonServer, replicas: list[TritonServer], log_path: Path | None = None,
                 fail_timeout: float = FAIL_TIMEOUT, startup_timeout: float = 30.0):
        self.front, self.replicas = front, replicas
        self.fail_timeout, self.startup_timeout = fail_timeout, startup_timeout
        self._work = tempfile.TemporaryDirectory(prefix="ser-nginx-")
        os.chmod(self._work.name, 0o755)  # nginx's workers run as nobody when it is started as root
        self.log_path = Path(log_path or Path(self._work.name) / "error.log")
        self.config_path = Path(self._work.name) / "nginx.conf"
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        health = f"max_fails=1 fail_timeout={self.fail_timeout:g}s"

        def servers(port_of) -> str:
            return "\n".join(f"        server {r.host}:{port_of(r)} {health};" for r in self.replicas)

        return _Template(TEMPLATE.read_text()).substitute(
            work=self._work.name, error_log=self._error_log(), host=self.front.host, http_port=self.front.http_port,
            grpc_port=self.front.grpc_port, http_servers=servers(lambda r: r.http_port),
            grpc_servers=servers(lambda r: r.grpc_port))

    def _error_log(self) -> str:
        """Where nginx writes its log: the log file, or stderr where the launcher's output is the log."""
        return "stderr" if self.log_path == server_log.STDOUT else str(self.log_path.resolve())

    def check_can_start(self) -> None:
        nginx_binary()
        check_ports_free(self.front.host, {"HTTP": self.front.http_port, "gRPC": self.front.grpc_port})

    def start(self) -> "Balancer":
        self.check_can_start()
        self.config_path.write_text(self.config())
        log = None if self.log_path == server_log.STDOUT else open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(nginx_binary()), "-p", self._work.name, "-c", str(self.config_path), "-e", self._error_log()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lifetime.ends_with_parent())
        if log is not None:
            log.close()
        try:  # ready through the balancer: nginx listens and reaches a replica
            wait_until_ready(NAME, self.process, self.front.http_url, self.startup_timeout, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def exit_reason(self) -> str | None:
        """None while nginx runs; once it has exited, what to tell the user."""
        if self.process is None or self.process.poll() is None:
            return None
        ended = processes.how_it_ended(self.process.returncode)
        return f"{NAME} {ended}; log: {server_log.name(self.log_path)}"

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM: the master stops its worker), then anything left in its group."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            processes.kill_leftovers(self.process.pid)
        self.process = None

    def close(self) -> None:
        self.stop()
        self._work.cleanup()
