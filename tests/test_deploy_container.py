"""The CPU image for real, with podman (docs/ship.md). `make image` builds it, on the registry's base
or on one bootstrapped from Debian, with the host pip's package sources mounted and nothing of
them left in it, small, carrying what the steps import; a second build comes from the layer
cache in seconds. The container serves the tiny export as `make serve` does: ready, healthy,
the same answers over gRPC and HTTP, every process uid 10001, a killed tritonserver restored by
the launcher, and `podman stop` finishing the requests in flight and exiting 0. The pod spec of
overlays/local runs under `make kube-play` as the cluster would run it: the overlay's own pod
(image, volume and published ports aside), its startup and readiness probes passing, the client
classifying through its ports, a killed server restored without a restart, a hung one failing
liveness and the container restarted under its restart policy; `make kube-down` removes it all.

Skipped, with the reason, only where podman cannot run containers (`make setup` as root installs
it). Every container and pod started here is removed, also when a test fails."""

import copy
import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from ser_triton.client.library import SERClient
from ser_triton.core.audio import load_audio
from ser_triton.core.contract import ENSEMBLE, STREAM_SOCKET_PATH
from ser_triton.serving.edge import PAGE_HEADERS
from ser_triton.serving import processes as server_processes
from ser_triton.serving.ports import free_port
from tests import container_helpers
from tests.conftest import GLOBAL_TIMEOUT, REPO_ROOT, require
from tests.container_helpers import (IMAGE, MAKE_TIMEOUT, Container, host_pid, image_id, inspect, make, podman,
                                     processes, ready, run_in_image)
from tests.deploy_helpers import KUBERNETES, render
from tests.socket_helpers import assert_same_events, framed, start_message, talk
from tests.server_helpers import (answers_across_a_stop, assert_same, descendants, end, eventually, free_ports, infer,
                                  start_launcher, utterance)

pytestmark = pytest.mark.container

SAMPLES = [REPO_ROOT / "samples/speech.wav", REPO_ROOT / "samples/sentence0.flac"]
USER = "10001"
MAX_IMAGE_BYTES = 800e6
"""The image is measured at 682 MB (docs/ship.md): base 137, tini and nginx 9, the virtualenv 534."""
CACHED_BUILD_SECONDS = 60
"""A rebuild with nothing changed: measured at 6 s on 2 cores."""
KUBE_PLAY_TIMEOUT = 900
BUILDS_THE_IMAGE = pytest.mark.timeout(MAKE_TIMEOUT + GLOBAL_TIMEOUT)
"""Above the global timeout: whichever of these tests runs first builds the image (make image)."""
PLAYS_THE_POD = pytest.mark.timeout(MAKE_TIMEOUT + KUBE_PLAY_TIMEOUT + GLOBAL_TIMEOUT)
"""Above the global timeout: the first of these may build the image, then plays the pod (make kube-play)."""


@pytest.fixture(scope="session")
def image():
    """`make image`, once a session; the container tests then run what it built."""
    require("podman")
    container_helpers.remove_leftovers()
    done, seconds = make("image", f"IMAGE={IMAGE}")
    assert done.returncode == 0, f"make image failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    print(f"\nmake image: {seconds:.0f} s")
    yield IMAGE
    container_helpers.remove_leftovers()


# --- the image -------------------------------------------------------------------------------------

@BUILDS_THE_IMAGE
def test_make_image_builds_the_cpu_image_to_run_as_user_10001(image):
    [inspected] = json.loads(podman("image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["User"] == f"{USER}:{USER}"
    assert config["Entrypoint"] == ["tini", "--", "python", "-m", "ser_triton.serving.launcher"]
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    # docker format (podman build --format docker): an OCI image cannot carry a HEALTHCHECK
    assert inspected["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert "http://127.0.0.1:8000/v2/health/ready" in " ".join(inspected["Healthcheck"]["Test"])
    assert inspected["Labels"]["org.opencontainers.image.revision"]


@BUILDS_THE_IMAGE
def test_no_program_in_the_image_gains_privileges(image):
    """No setuid or setgid file (Debian's su, passwd, mount...): the user stays 10001 whatever runs."""
    found = run_in_image(image, "import os, stat\n"
                                "for root, dirs, files in os.walk('/'):\n"
                                "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys')]\n"
                                "    for name in files:\n"
                                "        path = os.path.join(root, name)\n"
                                "        mode = os.lstat(path).st_mode\n"
                                "        if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID): print(path)")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == []


@BUILDS_THE_IMAGE
def test_the_image_holds_nothing_of_the_hosts_package_sources(image):
    """pip's configuration, CA bundle, indexes and find-links were mounted for the build stage
    only: no file, folder, variable or history entry of the image names them."""
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    [inspected] = json.loads(podman("image", "inspect", image).stdout)
    environment = " ".join(inspected["Config"].get("Env") or [])
    assert "PIP_" not in environment and "host-pip" not in history
    listed = subprocess.run([container_helpers.python_of_make(), "-m", "pip", "config", "list"], capture_output=True,
                            text=True).stdout
    for value in re.findall(r"='([^']+)'", listed):
        for item in value.split():
            if item.startswith(("/", "file:", "http")):
                assert item not in history and item not in environment, item
    found = run_in_image(image, "import glob, importlib.util, os; print(os.path.exists('/run/host-pip'), "
                                "importlib.util.find_spec('pip') is not None, glob.glob('/etc/pip.conf') "
                                "+ glob.glob('/etc/xdg/pip/*') + glob.glob('/home/*/.config/pip/*'))")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["False", "False", "[]"], found.stdout


@BUILDS_THE_IMAGE
def test_the_image_is_small_and_keeps_what_the_steps_import(image, tiny_repository):
    """Pruned (deploy/docker/prune.py) yet whole: every module the steps import loads, and OpenVINO,
    without its GPU plugins and non-ONNX readers, compiles an exported network for the CPU with
    ONNX Runtime's answers."""
    from tests.test_deploy_docker import third_party_imports

    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"\n{image}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES
    steps = [p.stem for p in (REPO_ROOT / "serving/steps").glob("*.py") if p.stem != "__init__"]
    modules = sorted(third_party_imports(steps) - {"triton_python_backend_utils"})
    code = f"""
import importlib, numpy as np
for module in {modules!r}:
    importlib.import_module(module)
import ser_triton.serving.launcher, ser_triton.serving.edge
from ser_triton.serving.steps.runtime import make_session
path = "/models/acoustic_encoder/1/model.onnx"
feed = {{"waveform": np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32),
        "waveform_length": np.array([16000], dtype=np.int64)}}
reference = make_session(path, 1, "onnxruntime").run(None, feed)
compiled = make_session(path, 1, "openvino", "f32").run(["acoustic_features"], feed)
np.testing.assert_allclose(compiled[0], reference[0], atol=1e-3)
print("ok")
"""
    ran = run_in_image(image, code, f"{tiny_repository}:/models:ro")
    assert ran.returncode == 0 and ran.stdout.strip().endswith("ok"), ran.stderr[-3000:]


@BUILDS_THE_IMAGE
def test_a_second_make_image_comes_from_the_layer_cache_in_seconds(image):
    before = image_id(image)
    done, seconds = make("image", f"IMAGE={image}")
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\ncached make image: {seconds:.1f} s")
    assert seconds < CACHED_BUILD_SECONDS
    assert image_id(image) == before  # every layer from the cache: the same image


# --- the container ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def container(image, tiny_repository):
    running = Container(image, tiny_repository)
    try:
        running.start().wait_until_ready()
        yield running
    finally:
        running.remove()


@pytest.fixture(scope="module")
def make_serve_results(tiny_repository):
    """What `make serve` (the launcher on this machine, edge included) answers for the samples."""
    ports = free_ports()
    launcher, _ = start_launcher(tiny_repository, ports)
    family = descendants(launcher.pid)
    try:
        results = {}
        for protocol in ("grpc", "http"):
            with SERClient(f"127.0.0.1:{ports[protocol]}", protocol) as client:
                results[protocol] = [client.classify(path) for path in SAMPLES]
        yield results
    finally:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        finally:
            end(launcher, family)


@BUILDS_THE_IMAGE
def test_the_container_becomes_ready_and_its_healthcheck_passes(container):
    assert ready(container.http_url)
    checked = podman("healthcheck", "run", container.name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert inspect(container.name)["State"]["Health"]["Status"] == "healthy"


@BUILDS_THE_IMAGE
@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_client_classifies_through_the_published_ports_as_make_serve_does(container, make_serve_results,
                                                                              protocol):
    url = container.grpc_url if protocol == "grpc" else container.http_url
    with SERClient(url, protocol) as client:
        for path, expected in zip(SAMPLES, make_serve_results[protocol]):
            assert_same(client.classify(path), expected, atol=1e-5)


def assert_page_and_socket_serve(http_url: str, grpc_url: str) -> None:
    """The page at / under its policy, and a live stream over /v1/stream with the events gRPC gives."""
    page = urllib.request.urlopen(f"http://{http_url}/", timeout=10)
    assert page.headers["Content-Security-Policy"] == PAGE_HEADERS["Content-Security-Policy"]
    assert b'id="mic"' in page.read()
    audio = load_audio(SAMPLES[0])
    result = talk(f"ws://{http_url}{STREAM_SOCKET_PATH}", start_message(), framed(audio, 0.5))
    assert result.messages[-1] == {"event": "end"} and result.code == 1000, result.messages[-2:]
    with SERClient(grpc_url) as client:
        expected = [event.to_json_dict() for event in client.stream_file(SAMPLES[0])]
    assert expected and [e["event"] for e in expected].count("utterance") >= 1
    assert_same_events(result.events, expected)


@BUILDS_THE_IMAGE
@pytest.mark.server
def test_the_container_serves_the_page_and_live_streams_over_its_websocket(container):
    assert_page_and_socket_serve(container.http_url, container.grpc_url)


@BUILDS_THE_IMAGE
def test_every_process_runs_as_uid_10001(container):
    listed = processes(container.name)
    assert {"tini", "python", "tritonserver", "nginx", "triton_python_b"} <= {p["comm"] for p in listed}
    assert {p["huser"] for p in listed} == {USER}
    for process in listed:  # real, effective, saved and file-system uid, as the kernel has them
        status = Path(f"/proc/{process['hpid']}/status").read_text()
        assert re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups() == (USER,) * 4


@BUILDS_THE_IMAGE
def test_a_killed_tritonserver_is_restored_by_the_launcher(container):
    """The container does not exit: the launcher restarts a replica whose server exited
    (serving/replicas.py check()), and it serves again."""
    started = inspect(container.name)["State"]["StartedAt"]
    killed = host_pid(container.name, "tritonserver")
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    assert eventually(lambda: "replica 1 is ready again" in container.logs(), 120), container.logs()[-3000:]
    assert eventually(lambda: ready(container.http_url), 30)
    state = inspect(container.name)
    assert state["State"]["Running"] and state["State"]["StartedAt"] == started and state["RestartCount"] == 0
    assert host_pid(container.name, "tritonserver") != killed
    with SERClient(container.grpc_url, "grpc") as client:
        assert client.classify(SAMPLES[0]).label


@BUILDS_THE_IMAGE
def test_podman_stop_answers_every_request_in_flight_and_exits_0(image, tiny_repository):
    """SIGTERM (podman stop, Kubernetes) with gRPC and HTTP requests in flight: the edge stops taking
    connections and finishes what it took (nginx's graceful stop), then the server stops, idle (its
    log says none was in flight: Triton 2.51 stopped with ensemble requests in flight can leave one
    unanswered for its whole exit timeout, test_deploy_stop.py); every request gets its own answer,
    and the container exits 0."""
    stopping = Container(image, tiny_repository)
    try:
        stopping.start().wait_until_ready()
        audios = [utterance(30, seed) for seed in range(8)]
        client = httpclient.InferenceServerClient(stopping.http_url, network_timeout=120)
        expected = [infer(client, "http", audio[None]) for audio in audios]
        results, in_flight = answers_across_a_stop(stopping.http_url, stopping.grpc_url, audios,
                                                   lambda: podman("stop", "--time", "60", stopping.name))
        state = inspect(stopping.name)["State"]
        assert in_flight >= 1  # answered after podman stop began
        for got, want in zip(results, expected):
            assert isinstance(got, tuple), got
            np.testing.assert_allclose(got[1], want[1], atol=1e-4)
            assert got[2] == want[2]
        assert state["ExitCode"] == 0 and not state["OOMKilled"]
        log = stopping.logs()
        assert "Found 0 model versions that have in-flight inferences" in log and "Exit timeout expired" not in log
    finally:
        stopping.remove()


# --- the pod spec: overlays/local under make kube-play ---------------------------------------------

def without(documents, kind: str) -> list[dict]:
    return [d for d in documents if d["kind"] != kind]


def test_the_local_overlay_differs_from_cpu_only_in_the_image_and_the_repositorys_volume():
    cpu, local = (copy.deepcopy(list(render(KUBERNETES / "overlays" / name))) for name in ("cpu", "local"))
    assert [d for d in cpu if d["kind"] == "PersistentVolumeClaim"]  # the cpu overlay's volume ...
    cpu = without(cpu, "PersistentVolumeClaim")
    assert len(cpu) == len(local)
    images = set()
    for ours, theirs in zip(local, cpu):
        for document in (ours, theirs):
            for container in document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if document is ours:
                    images.add(container["image"])
                container["image"] = "IMAGE"
        if ours["kind"] == "Deployment" and ours["metadata"]["name"] == "ser-triton":
            volumes = {v["name"]: v for v in ours["spec"]["template"]["spec"]["volumes"]}
            assert volumes["model-repository"]["hostPath"]["type"] == "Directory"  # ... and ours
            theirs_volumes = {v["name"]: v for v in theirs["spec"]["template"]["spec"]["volumes"]}
            assert theirs_volumes["model-repository"]["persistentVolumeClaim"]["readOnly"]
            volumes["model-repository"] = theirs_volumes["model-repository"]
            ours["spec"]["template"]["spec"]["volumes"] = list(volumes.values())
        assert ours == theirs
    assert images == {f"localhost/{IMAGE}"}  # the server's and the edge's: what make image builds


class Pod:
    """`make kube-play` of overlays/local with the tiny export, under a name and state folder of its
    own, on free ports; `make kube-down` removes it (always: see the fixture)."""

    def __init__(self, repository: Path, state: Path):
        self.name = container_helpers.test_name()
        self.repository, self.state = repository, state
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.arguments = [f"KUBE_ARGS=--state {state} --name {self.name}"]

    def play(self) -> tuple[subprocess.CompletedProcess, float]:
        """make kube-play; call down() after it, whatever happens."""
        return make("kube-play", f"IMAGE={IMAGE}", f"REPOSITORY={self.repository}", f"HTTP_PORT={self.ports['http']}",
                    f"GRPC_PORT={self.ports['grpc']}", f"METRICS_PORT={self.ports['metrics']}", *self.arguments,
                    timeout=KUBE_PLAY_TIMEOUT)

    @property
    def pod(self) -> str:
        return f"{self.name}-pod-0"

    @property
    def container(self) -> str:
        return f"{self.pod}-tritonserver"

    def url(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def status(self) -> dict:
        return json.loads((self.state / "status.json").read_text())

    def down(self) -> subprocess.CompletedProcess:
        done, _ = make("kube-down", *self.arguments, timeout=300)
        return done


@pytest.fixture(scope="module")
def pod(image, tiny_repository, tmp_path_factory):
    played = Pod(tiny_repository, tmp_path_factory.mktemp("kube-play"))
    try:
        done, seconds = played.play()
        assert done.returncode == 0, done.stdout + done.stderr
        print(f"\nmake kube-play: ready in {seconds:.0f} s")
        yield played
    finally:
        played.down()
        container_helpers.remove_leftovers()  # what kube-down could not remove


@PLAYS_THE_POD
def test_kube_play_runs_the_overlays_own_pod(pod):
    """What podman played is the overlay's server Deployment with three things set for this machine
    (published ports, the repository's path, the probes and the preStop hook run beside it) and its
    emptyDirs made as the kubelet makes them; its security context, resources and restart policy are
    in force."""
    [overlay] = [copy.deepcopy(d) for d in render(KUBERNETES / "overlays/local") if d["kind"] == "Deployment"
                 and d["metadata"]["name"] == "ser-triton"]
    [played] = [d for d in yaml.safe_load_all((pod.state / "played.yaml").read_text()) if d["kind"] == "Deployment"]
    played_spec, overlay_spec = played["spec"]["template"]["spec"], overlay["spec"]["template"]["spec"]
    [ours], [theirs] = played_spec["containers"], overlay_spec["containers"]
    assert {p["name"]: p["hostPort"] for p in ours["ports"]} == pod.ports
    beside = json.loads((pod.state / "pod.json").read_text())  # run beside the pod, as the kubelet runs them
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert beside[kind] == theirs.pop(kind)
    assert beside["preStop"] == theirs.pop("lifecycle")["preStop"]["exec"]["command"]
    for port in ours["ports"]:
        del port["hostPort"], port["hostIP"]
    for mount in ours["volumeMounts"]:
        mount["name"] = mount["name"].removeprefix(f"{pod.pod}-")
    for volume in played_spec["volumes"]:
        volume["name"] = volume["name"].removeprefix(f"{pod.pod}-")
        if "hostPath" in volume:
            volume["hostPath"]["path"] = "/var/lib/ser-triton/model_repository"
    played["metadata"]["name"] = "ser-triton"
    assert played == overlay

    state = inspect(pod.container)
    config, host = state["Config"], state["HostConfig"]
    assert config["User"] == f"{USER}:{USER}" and host["ReadonlyRootfs"]
    assert "no-new-privileges" in host["SecurityOpt"] and "CAP_KILL" in host["CapDrop"] and not host["CapAdd"]
    assert host["RestartPolicy"]["Name"] == "always"
    assert host["Memory"] == 6 * 2**30 and host["CpuQuota"] == 4 * host["CpuPeriod"]  # the cpu component's
    mounts = {m["Destination"]: m for m in state["Mounts"]}
    assert not mounts["/models"]["RW"]
    shared = podman("exec", pod.container, "sh", "-c", "grep ' /dev/shm ' /proc/mounts; id -u").stdout
    assert "tmpfs" in shared and "size=1048576k" in shared and shared.split()[-1] == USER


@PLAYS_THE_POD
def test_the_pods_startup_and_readiness_probes_pass(pod):
    status = pod.status()
    assert status["started"] and status["ready"] and status["restarts"] == 0
    assert any("startup probe passed" in e for e in status["events"])
    assert any("readiness probe passed" in e for e in status["events"])
    assert ready(pod.url("http"))


@PLAYS_THE_POD
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_client_classifies_through_the_pods_ports(pod, protocol):
    with SERClient(pod.url(protocol), protocol) as client:
        for path in SAMPLES:
            assert client.classify(path).label
    metrics = urllib.request.urlopen(f"http://{pod.url('metrics')}/metrics", timeout=5).read().decode()
    assert f'nv_inference_request_success{{model="{ENSEMBLE}"' in metrics


@PLAYS_THE_POD
def test_the_pod_serves_the_page_and_live_streams_over_its_websocket(pod):
    assert_page_and_socket_serve(pod.url("http"), pod.url("grpc"))


@PLAYS_THE_POD
def test_a_killed_server_in_the_pod_is_restored_without_a_restart(pod):
    killed = host_pid(pod.container, "tritonserver")
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    assert eventually(lambda: host_pid_or_none(pod.container) not in (None, killed) and ready(pod.url("http")), 120)
    assert inspect(pod.container)["RestartCount"] == 0 and pod.status()["restarts"] == 0


def test_a_crashed_python_step_in_the_pod_is_restored_without_a_restart(pod):
    """The CPU pods' launcher watches its server's Python steps (the GPU and KServe pods, which have no
    watchdog, fail their probes instead: test_deploy_health.py): a killed step's stub comes back and
    the pod serves again, its container never restarted."""
    def stub() -> int | None:
        server = host_pid_or_none(pod.container)
        found = [pid for pid, model in server_processes.stubs(server).items() if model == "ctc_tokenize"] \
            if server else []
        return found[0] if found else None

    killed = stub()
    assert killed
    subprocess.run(["kill", "-KILL", str(killed)], check=True)
    assert eventually(lambda: stub() not in (None, killed) and ready(pod.url("http")), 120), pod.status()["events"]
    with SERClient(pod.url("grpc"), "grpc") as client:
        assert client.classify(SAMPLES[0]).label
    assert inspect(pod.container)["RestartCount"] == 0 and pod.status()["restarts"] == 0


def host_pid_or_none(container: str) -> int | None:
    try:
        return host_pid(container, "tritonserver")
    except (container_helpers.engine.EngineError, ValueError):
        return None


@PLAYS_THE_POD
def test_a_hung_server_fails_liveness_and_the_container_restarts_under_its_policy(pod):
    """SIGSTOP: the server's process is there, so the launcher sees nothing wrong, but it answers
    nothing; the liveness probe fails 3 times (30 s), the container is stopped (SIGTERM, SIGKILL
    after the grace period) and restartPolicy Always restarts it; it is ready again and serves."""
    assert eventually(lambda: pod.status()["ready"], 60)
    before = inspect(pod.container)["State"]["StartedAt"]
    time.sleep(11)  # a liveness period that passes, so that the failures below are counted afresh
    subprocess.run(["kill", "-STOP", str(host_pid(pod.container, "tritonserver"))], check=True)
    assert eventually(lambda: inspect(pod.container)["State"]["StartedAt"] != before, 180), pod.status()["events"]
    assert eventually(lambda: pod.status()["ready"], 180), pod.status()["events"]
    status, state = pod.status(), inspect(pod.container)
    assert any("livenessProbe failed 3 times in a row" in e for e in status["events"]), status["events"]
    assert status["restarts"] == 1 and state["RestartCount"] == 1  # podman's restart policy restarted it
    with SERClient(pod.url("grpc"), "grpc") as client:
        assert client.classify(SAMPLES[0]).label


@PLAYS_THE_POD
def test_make_kube_down_removes_the_pod_and_its_volumes(pod):
    volumes = [m["Name"] for m in inspect(pod.container)["Mounts"] if m["Type"] == "volume"]
    assert volumes  # the emptyDirs
    done = pod.down()
    assert done.returncode == 0, done.stdout + done.stderr
    assert podman("pod", "exists", pod.pod, check=False).returncode != 0
    assert podman("container", "exists", pod.container, check=False).returncode != 0
    assert not set(volumes) & set(podman("volume", "ls", "--quiet").stdout.split())
    assert not (pod.state / "prober.pid").exists()
    assert not ready(pod.url("http"))
