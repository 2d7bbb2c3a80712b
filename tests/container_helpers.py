"""podman for the container tests: whether it can run here (else the tests skip, saying why), the
image `make image` builds, containers of it that are always removed, and what podman says of them."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from deploy.podman import engine
from ser_triton.serving.ports import free_port
from ser_triton.serving.supervisor import ready  # noqa: F401 - the tests read it from here
from tests.conftest import REPO_ROOT

IMAGE = "ser-triton-cpu:dev"
"""What `make image` builds and the local overlay runs (as localhost/ser-triton-cpu:dev)."""

LABEL = "ser-triton.test"
"""Every container these tests start carries it, its value the pid of the test session, so that
none outlives its session (and another session's are left alone while it runs)."""

PREFIX = "ser-triton-test-"
"""The names of the tests' containers and pods (and of the pods' volumes): PREFIX<pid>-<random>."""


def test_name() -> str:
    return f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _ours_or_orphaned(session: str) -> bool:
    """A session's leftovers are removed by it, or by a later session once it is gone."""
    return session == str(os.getpid()) or not (session.isdigit() and Path(f"/proc/{session}").exists())


def podman(*arguments: str, check: bool = True, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """deploy/podman/engine.py's podman, as the tests run it: checked, and bounded in time."""
    return engine.podman(*arguments, check=check, timeout=timeout, **options)


def why_podman_cannot_run() -> str | None:
    """None where podman runs containers here; else why not (conftest.require: the tests skip with
    it, or fail where the run requires podman)."""
    if shutil.which("podman") is None:
        return "podman is not installed: `make setup` as root installs it (deploy/podman/setup.sh)"
    try:
        info = engine.podman("info", "--format", "json", timeout=60)
    except subprocess.TimeoutExpired:
        return "`podman info` does not answer"
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()}"
    if os.geteuid() != 0 and not any(engine.exists("image", base)
                                     for base in ("python:3.11-slim-bookworm", "localhost/ser-triton-base:bookworm")):
        return "no base image here, and bootstrapping one from Debian (debootstrap) needs root"
    return None


MAKE_TIMEOUT = 1800
"""The longest a make target of these tests may take (make image from nothing, on 2 cores)."""


def make(*arguments: str, timeout: float = MAKE_TIMEOUT) -> tuple[subprocess.CompletedProcess, float]:
    """`make ARGUMENTS` in the repository, and how long it took."""
    started = time.monotonic()
    done = subprocess.run(["make", "--no-print-directory", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=engine.environment())
    return done, time.monotonic() - started


image_id = engine.image_id


def inspect(name: str) -> dict:
    data = engine.inspect(name)
    assert data is not None, f"no container {name}"
    return data


def processes(name: str) -> list[dict]:
    """The container's processes: host pid, user and command (podman top)."""
    listed = podman("top", name, "hpid", "huser", "user", "comm").stdout.splitlines()[1:]
    return [dict(zip(("hpid", "huser", "user", "comm"), line.split(None, 3))) for line in listed]


def host_pid(name: str, command: str) -> int:
    [pid] = [int(p["hpid"]) for p in processes(name) if p["comm"] == command]
    return pid


class Container:
    """`podman run -d` of the image: the tiny export mounted read-only at /models, the ports
    published on free loopback ports. Always removed (with its volumes) by remove()."""

    def __init__(self, image: str, repository: Path, *extra: str):
        self.name = test_name()
        self.ports = {name: free_port() for name in ("http", "grpc", "metrics")}
        self.arguments = [*(f"--publish=127.0.0.1:{port}:{inside}"
                            for port, inside in zip(self.ports.values(), (8000, 8001, 8002))),
                          f"--volume={repository}:/models:ro", *extra, image]

    def start(self) -> "Container":
        """podman run; call remove() after it, whatever happens (a failed start leaves a container)."""
        podman("run", "--detach", "--name", self.name, "--label", f"{LABEL}={os.getpid()}", "--shm-size=1g",
               *self.arguments)
        return self

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def running(self) -> bool:
        return inspect(self.name)["State"]["Running"]

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_until_ready(self, seconds: float = 180) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.running(), f"the container exited:\n{self.logs()[-3000:]}"
            if ready(self.http_url):
                return
            time.sleep(0.5)
        pytest.fail(f"the container was not ready after {seconds:.0f} s:\n{self.logs()[-3000:]}")

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "0", self.name, check=False)


def remove_leftovers() -> None:
    """Whatever a crashed test session left: every container with the tests' label, every pod and
    volume with the tests' name."""
    template = '{{.ID}} {{index .Labels "%s"}}' % LABEL
    listed = podman("ps", "--all", "--filter", f"label={LABEL}", "--format", template, check=False).stdout.splitlines()
    left = [line.split()[0] for line in listed if len(line.split()) == 2 and _ours_or_orphaned(line.split()[1])]
    if left:
        podman("rm", "--force", "--volumes", "--time", "0", *left, check=False)

    def session(name: str) -> str:
        return name.removeprefix(PREFIX).split("-")[0]

    pods = [p for p in podman("pod", "ps", "--format", "{{.Name}}", check=False).stdout.split()
            if p.startswith(PREFIX) and _ours_or_orphaned(session(p))]
    if pods:
        podman("pod", "rm", "--force", "--time", "0", *pods, check=False)
    volumes = [v for v in podman("volume", "ls", "--quiet", check=False).stdout.split()
               if v.startswith(PREFIX) and _ours_or_orphaned(session(v))]
    if volumes:
        podman("volume", "rm", "--force", *volumes, check=False)


def run_in_image(image: str, code: str, *volumes: str) -> subprocess.CompletedProcess:
    """python -c CODE in a throwaway container of the image (as its user, its root read-only)."""
    return podman("run", "--rm", "--label", f"{LABEL}={os.getpid()}", "--read-only", "--tmpfs=/tmp",
                  "--network", "none", *(f"--volume={v}" for v in volumes), "--entrypoint", "python", image,
                  "-c", code, check=False, timeout=300)


def python_of_make() -> str:
    """The Python `make image` and `make kube-play` run their scripts with (the Makefile's SHIP_PY)."""
    venv = REPO_ROOT / ".venv/bin/python"
    return str(venv) if venv.exists() else (shutil.which("python3") or sys.executable)
