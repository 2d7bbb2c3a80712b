"""`make image`: the CPU image (deploy/docker/cpu.Dockerfile) built with podman, as ser-triton-cpu:dev.

    python deploy/podman/image.py [--tag ser-triton-cpu:dev] [--base IMAGE]

The base: the Dockerfile's own (its PYTHON_IMAGE default, python:3.11-slim-bookworm) where it is
here or can be pulled; where it cannot, a base bootstrapped from Debian's packages
(deploy/podman/base.sh, localhost/ser-triton-base:bookworm), given to the same Dockerfile
through PYTHON_IMAGE. A base once here is reused, so a rebuild never waits on a registry;
`podman rmi localhost/ser-triton-base:bookworm` makes the next build try the registry again.

Python packages come from the package sources this machine's pip uses (`pip config list`: the
index URLs, find-links, constraints and CA bundle): a pip.conf naming them is written outside
the build context and mounted, with the local files and folders it names, under /run/host-pip
for the build stage's RUN steps only (podman build --target build -v ...:ro), where that stage
points PIP_CONFIG_FILE; the image is then built on that stage's cached layers without them, so
nothing of it is in any layer of the image. Layers are cached: a rebuild without changes takes
seconds, a change of the code rebuilds only the project's layer.

Standard library only (it runs before the virtualenv may exist).
"""

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import engine

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/docker/cpu.Dockerfile"
BASE_SCRIPT = Path(__file__).with_name("base.sh")
TAG = "ser-triton-cpu:dev"
LOCAL_BASE = "localhost/ser-triton-base:bookworm"
MOUNT = "/run/host-pip"
"""Where the build's RUN steps see the host pip's configuration (the Dockerfile's PIP_CONFIG_FILE's folder)."""

PULL_TIMEOUT = 300

SOURCE_OPTIONS = ("index-url", "extra-index-url", "no-index", "find-links", "trusted-host", "cert", "client-cert",
                  "constraint", "timeout", "default-timeout", "retries", "proxy", "pre", "prefer-binary",
                  "only-binary", "no-binary", "keyring-provider")
"""The pip options that say where packages come from and how to reach them; the others (a cache
folder, --user, a target...) are the host's business and stay out of the build."""

FILE_OPTIONS = ("cert", "client-cert", "constraint")
"""Options whose values are local files."""

LIST_OPTIONS = ("extra-index-url", "find-links", "trusted-host", "constraint")
"""Options that hold several values (separated by white space)."""


class ImageError(RuntimeError):
    """The image cannot be built; the message says why and what to do."""


def say(message: str) -> None:
    print(f"make image: {message}", flush=True)


def registry_base() -> str:
    """The Dockerfile's own base, its PYTHON_IMAGE default."""
    return re.search(r"(?m)^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text()).group(1)


def choose_base(requested: str | None) -> str:
    """The base to build on: the one asked for; else the registry's, where it is here or can be
    pulled; else the bootstrapped one, made where it is missing."""
    if requested:
        return requested
    registry = registry_base()
    if engine.exists("image", registry):
        return registry
    if engine.exists("image", LOCAL_BASE):
        say(f"the registry base {registry} is not here: building on {LOCAL_BASE}, bootstrapped from Debian "
            f"earlier (podman rmi {LOCAL_BASE} to try the registry again)")
        return LOCAL_BASE
    say(f"pulling {registry}")
    try:
        pulled = engine.podman("pull", "--quiet", registry, timeout=PULL_TIMEOUT)
        if pulled.returncode == 0:
            return registry
        reason = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
    except subprocess.TimeoutExpired:
        reason = f"no answer in {PULL_TIMEOUT} s"
    say(f"{registry} cannot be pulled ({reason}): bootstrapping {LOCAL_BASE} from Debian's packages (about a minute)")
    made = subprocess.run(["sh", str(BASE_SCRIPT), LOCAL_BASE])
    if made.returncode != 0:
        raise ImageError(f"neither {registry} nor a base bootstrapped from Debian could be had (see above)")
    return LOCAL_BASE


def pip_configuration(python: str) -> dict[str, str]:
    """The effective values of the host pip's options for `pip install`, from `pip config list`:
    environment variables over the install section over the global one."""
    try:
        listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    except OSError:
        return {}
    if listed.returncode != 0:
        say(f"`{python} -m pip config list` failed, building with pip's defaults: {listed.stderr.strip()}")
        return {}
    rank = {"global": 0, "install": 1, ":env:": 2}
    chosen: dict[str, tuple[int, str]] = {}
    for line in listed.stdout.splitlines():
        key, separator, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if not separator or section not in rank or name not in SOURCE_OPTIONS:
            continue
        try:
            value = ast.literal_eval(value)
        except (SyntaxError, ValueError):
            pass
        if name not in chosen or rank[section] >= chosen[name][0]:
            chosen[name] = (rank[section], str(value))
    return {name: value for name, (_, value) in chosen.items()}


class Mounts:
    """Host paths mounted read-only under MOUNT, each once, with the path the build sees."""

    def __init__(self):
        self.paths: dict[Path, str] = {}

    def add(self, path: Path) -> str:
        path = path.resolve()
        if path not in self.paths:
            self.paths[path] = f"{MOUNT}/{len(self.paths) + 1}-{re.sub(r'[^A-Za-z0-9._-]', '_', path.name) or 'root'}"
        return self.paths[path]

    def volumes(self) -> list[str]:
        return [f"--volume={path}:{inside}:ro" for path, inside in self.paths.items()]


def local_path(value: str) -> Path | None:
    """The local path a find-links or index value names (a path or a file:// URL), else None."""
    parsed = urlparse(value)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and value.startswith(("/", ".")):
        return Path(value)
    return None


def build_configuration(options: dict[str, str], mounts: Mounts) -> str:
    """pip.conf for the build: the host's sources, local paths replaced by where they are mounted.
    A local index (file://.../simple) is mounted with its parent folder, where its pages link."""
    lines = ["[global]"]
    for name, value in sorted(options.items()):
        values = value.split() if name in LIST_OPTIONS else [value]
        seen = []
        for item in values:
            path = local_path(item)
            if name in FILE_OPTIONS:
                path = Path(item)
                if not path.is_file():
                    say(f"pip's {name} {item} does not exist here: left out")
                    continue
                seen.append(mounts.add(path))
            elif path is not None and name in ("index-url", "extra-index-url"):
                if not path.is_dir():
                    say(f"pip's {name} {item} does not exist here: left out")
                    continue
                seen.append("file://" + mounts.add(path.parent) + "/" + path.name)
            elif path is not None and name == "find-links":
                if not path.exists():
                    say(f"pip's find-links {item} does not exist here: left out")
                    continue
                seen.append(mounts.add(path))
            else:
                seen.append(item)
        if seen:
            lines.append(f"{name} = {' '.join(seen)}")
    return "\n".join(lines) + "\n"


def revision() -> str:
    described = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
                               capture_output=True, text=True)
    return described.stdout.strip() if described.returncode == 0 else "unknown"


def build(tag: str, base: str, python: str) -> None:
    """Two podman builds of the same Dockerfile: the build stage with the host pip's sources
    mounted, then the whole image without them, on the first one's cached layers. `podman build
    -v` mounts into every RUN step of every stage and leaves the mount points behind as empty
    files and folders, so the final stage's RUN never sees them: nothing under /run/host-pip is
    left in the image."""
    mounts = Mounts()
    arguments = ["--format", "docker", "--layers", "--network", "host", "--file", str(DOCKERFILE),
                 *(["--build-arg", f"PYTHON_IMAGE={base}"] if base != registry_base() else [])]
    with tempfile.TemporaryDirectory(prefix="ser-triton-pip-") as work:
        configuration = Path(work, "pip.conf")
        configuration.write_text(build_configuration(pip_configuration(python), mounts))
        configuration.chmod(0o644)
        volumes = [f"--volume={configuration}:{MOUNT}/pip.conf:ro", *mounts.volumes()]
        say(f"podman build: the build stage on {base}, with the host pip's sources ({len(mounts.paths)} local "
            "paths mounted)")
        built = engine.podman("build", *arguments, "--target", "build", *volumes, str(ROOT), capture_output=False)
    if built.returncode != 0:
        raise ImageError(f"podman build of the build stage failed (exit {built.returncode}; see above)")
    say(f"podman build: {tag}")
    built = engine.podman("build", *arguments, "--tag", tag, "--label",
                          f"org.opencontainers.image.revision={revision()}", str(ROOT), capture_output=False)
    if built.returncode != 0:
        raise ImageError(f"podman build failed (exit {built.returncode}; see above)")


def image_size(tag: str) -> int:
    inspected = engine.podman("image", "inspect", "--format", "{{.Size}}", tag)
    return int(inspected.stdout.strip() or 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default=TAG)
    parser.add_argument("--base", help="build on this base instead of choosing (the Dockerfile's PYTHON_IMAGE)")
    parser.add_argument("--pip-python", default=sys.executable,
                        help="the Python whose pip's configuration gives the package sources (default: this one)")
    args = parser.parse_args(argv)
    if shutil.which("podman") is None:
        print("make image: podman is missing: run `make setup` as root (it installs podman) or "
              "`apt-get install podman runc catatonit debootstrap`", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        base = choose_base(args.base)
        build(args.tag, base, args.pip_python)
    except ImageError as error:
        print(f"make image: {error}", file=sys.stderr)
        return 1
    say(f"{args.tag}: {image_size(args.tag) / 1e6:.0f} MB on {base}, in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
