"""The probes of the pods that run tritonserver without the launcher's watchdog (the GPU image, KServe),
run here as processes: the bundled tritonserver started with the manifests' own arguments (through
ser_triton.serving.admin, model control none), and the manifests' own probe commands against it. Ready
and alive while it serves; after a Python step's stub process is killed, Triton's health endpoints
still answer 200 (the reason for the probe) but both probes fail, naming the step; a restarted
server passes them again. Only the ports, the repository and the Python are this machine's."""

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ser_triton.serving import processes
from ser_triton.serving.ports import free_port
from tests.deploy_helpers import DEPLOY, HEALTH_PROBE, KUBERNETES, LIVE_PATH, READY_PATH, find, render
from tests.server_helpers import eventually

pytestmark = pytest.mark.server

VICTIM = "ctc_tokenize"
"""The Python step whose stub the tests kill."""


def deployed(name: str) -> dict:
    """The server container as the GPU overlay or the KServe runtime deploys it."""
    if name == "gpu":
        documents = render(KUBERNETES / "overlays/gpu")
        [container] = find(documents, "Deployment", "ser-triton")["spec"]["template"]["spec"]["containers"]
    else:
        [container] = find(render(DEPLOY / "kserve"), "ServingRuntime")["spec"]["containers"]
    return container


def here(command: list[str]) -> list[str]:
    """A command of the image run here: this Python for the image's python3."""
    return [sys.executable if part == "python3" else part for part in command]


class Server:
    """tritonserver started as the deployment starts it, on free ports, serving `repository`."""

    def __init__(self, container: dict, repository: Path):
        self.http_port = free_port()
        ports = {"--http-port": self.http_port, "--grpc-port": free_port(), "--metrics-port": free_port()}
        arguments = [a for a in container["args"] if a.partition("=")[0] not in ports]
        arguments = [f"--model-repository={repository}" if a.startswith("--model-repository=") else a
                     for a in arguments]
        self.command = here(arguments) + [f"{flag}={port}" for flag, port in ports.items()]
        self.environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.process = None

    def start(self) -> "Server":
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        env=self.environment, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            processes.kill_leftovers(self.process.pid)

    def status(self, path: str) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as reply:
            return reply.status


def probe(container: dict, kind: str, server: Server) -> subprocess.CompletedProcess:
    """The deployment's own probe command, its --url this server's."""
    command = here(container[kind]["exec"]["command"])
    if "--url" in command:
        del command[command.index("--url"):command.index("--url") + 2]
    return subprocess.run([*command, "--url", f"127.0.0.1:{server.http_port}"], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("name", ["gpu", "kserve"])
def test_a_crashed_python_step_fails_the_probes_and_a_restart_passes_them(name, tiny_repository):
    container = deployed(name)
    assert container["args"][:4] == ["python3", "-m", "ser_triton.serving.admin", "tritonserver"]
    assert "--model-control-mode=none" in container["args"]  # no reload: the pod must restart
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["exec"]["command"][:3] == HEALTH_PROBE
    server = Server(container, tiny_repository).start()
    try:
        assert eventually(lambda: probe(container, "readinessProbe", server).returncode == 0, 120), \
            probe(container, "readinessProbe", server).stderr
        alive = probe(container, "livenessProbe", server)
        assert alive.returncode == 0, alive.stderr

        [stub] = [pid for pid, model in processes.stubs(server.process.pid).items() if model == VICTIM]
        os.kill(stub, signal.SIGKILL)
        assert eventually(lambda: VICTIM not in processes.stubs(server.process.pid).values(), 10)
        # what Triton 2.51 itself says: all well (why the probe looks for the stubs)
        for path in (READY_PATH, LIVE_PATH, f"/v2/models/{VICTIM}/ready"):
            assert server.status(path) == 200, path
        for kind in ("readinessProbe", "livenessProbe"):
            failed = probe(container, kind, server)
            assert failed.returncode == 1, (kind, failed.stdout)
            [line] = failed.stderr.splitlines()
            assert f"'{VICTIM}' lost its stub process" in line and "until the server restarts" in line

        server.stop()  # Kubernetes restarts the container: a new server
        server.start()
        assert eventually(lambda: probe(container, "readinessProbe", server).returncode == 0, 120), \
            probe(container, "readinessProbe", server).stderr
        assert probe(container, "livenessProbe", server).returncode == 0
    finally:
        server.stop()
