"""Each extra installs and works alone, in a fresh virtualenv (not the one `make setup` made).

- the bare client (`pip install .`): `python client/infer.py --help` and a classification work, and
  every module of core imports, and neither torch, jiwer nor the project's internals beyond the client and
  core can be imported;
- `[export]`: `python -m ser_triton.export --help` and a tiny export;
- `[serve]`: `make serve`'s launcher serves an exported repository, and the client classifies through it;
- `[evaluate]`: `python client/evaluate.py` on the shipped manifest, against a server.
Everything installs under one import name, ser_triton: no top-level `client`, `model`, `export`.
"""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_triton import samples
from ser_triton.core.audio import load_audio
from ser_triton.core.contract import LABELS, SAMPLE_RATE
from tests.conftest import GLOBAL_TIMEOUT, REPO_ROOT
from tests.server_helpers import end, free_ports

PIP_TIMEOUT = 1500
"""The longest one extra's `pip install` into a fresh virtualenv may take (torch and all, for export)."""
EXPORT_TIMEOUT = 600
"""The longest the tiny export may take in the export extra's own virtualenv."""
pytestmark = [pytest.mark.install, pytest.mark.timeout(PIP_TIMEOUT + GLOBAL_TIMEOUT)]
"""Above the global timeout: each test installs its extra first."""


def fresh_environment(folder: Path, extra: str | None) -> Path:
    """A new virtualenv in `folder` with the project (and `extra`) installed from the source tree; its python."""
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / "bin" / "python"
    target = f"{REPO_ROOT}[{extra}]" if extra else str(REPO_ROOT)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                "--no-compile", target], capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


def run(python: Path, *arguments: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in the fresh environment alone: its bin first on PATH, nothing of ours on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    return subprocess.run([str(python), *arguments], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cannot_import(python: Path, module: str, cwd: Path) -> bool:
    return run(python, "-c", f"import {module}", cwd=cwd).returncode != 0


@pytest.fixture(scope="module")
def environments(tmp_path_factory):
    """extra -> python of its own fresh virtualenv, made on first use."""
    made = {}

    def get(extra):
        if extra not in made:
            made[extra] = fresh_environment(tmp_path_factory.mktemp(f"venv-{extra or 'client'}"), extra)
        return made[extra]
    return get


def test_the_bare_client_installs_alone_and_classifies(environments, tiny_server, tmp_path):
    python = environments(None)
    helped = run(python, str(REPO_ROOT / "client" / "infer.py"), "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--api-key" in helped.stdout, helped.stderr
    done = run(python, str(REPO_ROOT / "client" / "infer.py"), str(REPO_ROOT / "samples" / "speech.wav"), "--json",
               "--url", tiny_server.grpc_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] in LABELS
    ground_floor = ", ".join(f"ser_triton.core.{path.stem}" for path in sorted((REPO_ROOT / "core").glob("*.py"))
                             if path.stem != "__init__")
    imported = run(python, "-c", f"import ser_triton.client.library, {ground_floor}", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr  # the whole ground floor, with the client's dependencies alone
    for module in ("torch", "onnxruntime", "transformers", "jiwer", "ser_triton.model.sources", "client", "model",
                   "export"):
        assert cannot_import(python, module, tmp_path), f"{module} is importable from the bare client's install"
    assert (python.parent / "ser-infer").is_file()
    long = tmp_path / "long.wav"  # over the 20 s window: by default cut where the speaker pauses, still no torch
    pause = np.zeros(SAMPLE_RATE * 3 // 2, np.float32)
    soundfile.write(long, np.concatenate([part for _ in range(2) for path in samples.sentences()
                                          for part in (load_audio(path), pause)]), SAMPLE_RATE)
    done = run(python, str(REPO_ROOT / "client" / "infer.py"), str(long), "--json", "--url", tiny_server.grpc_url,
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["segments"]) == 2 * len(samples.sentences())


@pytest.mark.timeout(PIP_TIMEOUT + EXPORT_TIMEOUT + GLOBAL_TIMEOUT)
def test_the_export_extra_exports_alone(environments, tmp_path):
    python = environments("export")
    helped = run(python, "-m", "ser_triton.export", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    done = run(python, "-m", "ser_triton.export", "--preset", "tiny", "--out", str(tmp_path / "repository"),
               cwd=tmp_path, timeout=EXPORT_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "repository" / "ser" / "config.pbtxt").is_file()
    assert "verified: exported fp32 networks match PyTorch" in done.stdout


def test_the_serve_extra_serves_alone(environments, tiny_repository, tmp_path):
    python = environments("serve")
    assert cannot_import(python, "torch", tmp_path)
    ports = free_ports()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    launcher = subprocess.Popen(
        [str(python), "-m", "ser_triton.serving.launcher", "--repository", str(tiny_repository), "--timeout", "120",
         "--log-file", str(tmp_path / "tritonserver.log"), *(f"--{name}-port={port}" for name, port in ports.items())],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = []
        while not (said and said[-1].startswith("ready:")):
            line = launcher.stdout.readline()
            assert line, "".join(said)
            said.append(line)
        done = subprocess.run([sys.executable, str(REPO_ROOT / "client" / "infer.py"),
                               str(REPO_ROOT / "samples" / "speech.wav"), "--json", "--url",
                               f"127.0.0.1:{ports['grpc']}"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["label"] in LABELS
    finally:
        launcher.terminate()
        launcher.wait(60)
        end(launcher, {})
    assert launcher.returncode == 0


def test_the_evaluate_extra_evaluates_alone(environments, tiny_server, tmp_path):
    python = environments("evaluate")
    assert cannot_import(python, "torch", tmp_path)
    done = run(python, str(REPO_ROOT / "client" / "evaluate.py"), str(REPO_ROOT / "samples" / "labelled.csv"),
               "--url", tiny_server.grpc_url, "--out", str(tmp_path / "out"), "--bootstrap", "50", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_utterances"] == 4
    assert (python.parent / "ser-evaluate").is_file()
