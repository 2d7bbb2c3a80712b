"""A server safe to expose: tried as an attacker on the same network, or on the same machine, would.

Against a real `make serve` (one server, and two replicas), through the edge and at every server's
own ports: a model-repository load carrying its own Python runs nothing, `ser` cannot be unloaded,
log and trace settings do not change, shared memory cannot be registered, each refusal saying so.
A second local user reads every process's command line and environment, the repository, the logs
and the edge's config, and with all it finds reaches none of it; the positive control: where an
operator opened the control plane with an admin key, the same attack does get in, and with that
key loading, logging, trace and shared memory work on every replica. Oversize bodies and stream
messages are refused before anything buffers them (the peak memory of NGINX, the stream gateways,
the servers and their Python stubs, a measure shown to see a buffered body); the edge drops
credentials before a request goes on; no secret appears in any output or log over a whole run.
"""

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import websockets
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from ser_triton.core import contract
from ser_triton.client.access import socket_key_protocol
from ser_triton.client.library import SERClient
from ser_triton.serving import admin, edge, isolation, processes
from ser_triton.serving.ports import free_port
from ser_triton.serving.stream_gateway import METHOD, SERVICE, StreamGateway, max_message_bytes
from ser_triton.serving.supervisor import SHM_PREFIX
from tests.conftest import REPO_ROOT
from tests.deploy_helpers import self_signed_certificate
from tests.server_helpers import PeakMemory, descendants, end, free_ports, infer, start_launcher, utterance
from tests.socket_helpers import framed, start_message, talk

pytestmark = pytest.mark.server

PROTOCOLS = ("http", "grpc")
OVERSIZE_BYTES = 300 * 1024 * 1024
SECOND_USER = 54321
"""The uid of the second local user: no process runs as it (nobody would share a uid with nginx's
workers, which run as nobody when the edge is started as root)."""
CANARY = "canary-secret-" + base64.urlsafe_b64encode(os.urandom(12)).decode()
"""A secret in the launcher's environment (as a client key in $SER_API_KEY would be)."""
LAUNCHER_ENVIRONMENT = {**os.environ, "SER_API_KEY": CANARY}


class Launched:
    """A `make serve` launcher in a subprocess, with what a local attacker-test can learn of it."""

    def __init__(self, repository: Path, tmp: Path, *extra: str):
        self.ports = free_ports()
        self.logs = tmp / "logs"
        self.process, self.said = start_launcher(repository, self.ports, "--log-file",
                                                 str(self.logs / "tritonserver.log"), *extra, env=LAUNCHER_ENVIRONMENT)
        self.family = descendants(self.process.pid)
        self.servers = sorted(pid for pid, name in self.family.items() if name == "tritonserver")
        arguments = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") for pid in self.family}
        flag = {name: [next(a.split("=", 1)[1] for a in arguments[pid] if a.startswith(f"--{name}-port="))
                       for pid in self.servers] for name in ("http", "grpc")}
        self.server_urls = {"http": [f"127.0.0.1:{p}" for p in flag["http"]],
                            "grpc": [f"127.0.0.1:{p}" for p in flag["grpc"]]}
        self.gateway_urls = sorted(args[args.index("--listen") + 1] for args in arguments.values()
                                   if "ser_triton.serving.stream_gateway" in args)
        self.socket_urls = sorted(a.split("=", 1)[1] for args in arguments.values()
                                  if "ser_triton.serving.stream_gateway" in args
                                  for a in args if a.startswith("--websocket-listen="))

    def edge_url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports[protocol]}"

    def every_url(self, protocol: str) -> list[str]:
        """The edge's and every server's own address."""
        return [self.edge_url(protocol), *self.server_urls[protocol]]

    def members(self) -> dict[int, str]:
        """What runs under the launcher now: servers, their stubs, the gateways, nginx and its worker."""
        return descendants(self.process.pid)

    def logs_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs.glob("*.log"))

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.said += self.process.communicate(timeout=90)[0]
        end(self.process, self.family | self.members())


@pytest.fixture(scope="module", params=[1, 2], ids=["one-server", "two-replicas"])
def launched(request, tiny_repository, tmp_path_factory):
    served = Launched(tiny_repository, tmp_path_factory.mktemp("serve"), "--replicas", str(request.param))
    yield served
    served.close()


@pytest.fixture(scope="module")
def operated(tiny_repository, tmp_path_factory):
    """Two replicas whose control plane an operator opened with an admin key (--admin-key-file)."""
    tmp = tmp_path_factory.mktemp("operated")
    served_key = admin.new_key()
    (tmp / "admin-key").write_text(served_key + "\n")
    served = Launched(tiny_repository, tmp, "--replicas", "2", "--admin-key-file", str(tmp / "admin-key"))
    served.admin_key = served_key
    yield served
    served.close()


def client(url: str, protocol: str):
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(url, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE)])
    return httpclient.InferenceServerClient(url, network_timeout=120)


def admin_headers(protocol: str, key: str) -> dict:
    """The admin key as Triton reads it: a plain header over HTTP, a prefixed one over gRPC."""
    name = admin.ADMIN_HEADER if protocol == "http" else f"triton-grpc-protocol-{admin.ADMIN_HEADER}"
    return {name: key}


def evil_load(connection, marker: Path, **headers):
    """The attack of the issue: a model whose files travel in the request, Python that writes `marker`."""
    code = (f"open({str(marker)!r}, 'w').write('ran')\n"
            "class TritonPythonModel:\n"
            "    def execute(self, requests):\n"
            "        return []\n")
    config = json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0,
                         "input": [{"name": "I", "data_type": "TYPE_FP32", "dims": [1]}],
                         "output": [{"name": "O", "data_type": "TYPE_FP32", "dims": [1]}]})
    connection.load_model("evil", config=config, files={"file:1/model.py": code.encode()}, **headers)


def refused(call) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value)


def refusal(protocol: str, header: str) -> str:
    """What a server answers a control-plane request without the header it wants."""
    return (f"This API is restricted, expecting header '{header}'" if protocol == "http"
            else f"This protocol is restricted, expecting header 'triton-grpc-protocol-{header}'")


def assert_refused_everywhere(launched_set: Launched, protocol: str, call, header: str = admin.CLOSED_HEADER):
    """`call(connection)` is refused by the edge (not served there) and by every server (restricted)."""
    assert "not served here" in refused(lambda: call(client(launched_set.edge_url(protocol), protocol)))
    for url in launched_set.server_urls[protocol]:
        assert refusal(protocol, header) in refused(lambda: call(client(url, protocol)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_repository_load_with_its_own_code_runs_nothing(launched, protocol, tmp_path):
    marker = tmp_path / "the payload ran"
    assert_refused_everywhere(launched, protocol, lambda connection: evil_load(connection, marker))
    assert not marker.exists()  # the payload ran with the admin key: test_the_admin_key_opens_the_control_plane


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ser_cannot_be_unloaded_and_stays_ready(launched, protocol):
    assert_refused_everywhere(launched, protocol, lambda connection: connection.unload_model(contract.ENSEMBLE))
    for url in launched.every_url(protocol):
        assert client(url, protocol).is_model_ready(contract.ENSEMBLE)
    emotions, probabilities, _ = infer(client(launched.edge_url(protocol), protocol), protocol,
                                       utterance(1.0, 5)[None])
    assert len(emotions) == 1 and probabilities.shape == (1, len(contract.LABELS))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_and_trace_settings_cannot_be_read_or_changed(launched, protocol):
    assert_refused_everywhere(launched, protocol, lambda c: c.update_log_settings({"log_verbose_level": 2}))
    assert_refused_everywhere(launched, protocol, lambda c: c.get_log_settings())
    assert_refused_everywhere(launched, protocol,
                              lambda c: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}))
    assert_refused_everywhere(launched, protocol, lambda c: c.get_trace_settings())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_cannot_be_registered_or_listed(launched, protocol):
    own = sorted(processes.shared_memory_files(launched.servers[0], SHM_PREFIX))
    assert own  # the Python backend's own regions: the worst a client could name
    assert_refused_everywhere(launched, protocol,
                              lambda c: c.register_system_shared_memory("stolen", "/" + own[0], 4096))
    assert_refused_everywhere(launched, protocol, lambda c: c.get_system_shared_memory_status())


def log_verbosity(connection, protocol: str, headers: dict) -> int:
    settings = connection.get_log_settings(headers=headers)
    return int(settings["log_verbose_level"] if protocol == "http"
               else settings.settings["log_verbose_level"].uint32_param)


def trace_rate(connection, protocol: str, headers: dict) -> str:
    settings = connection.get_trace_settings(headers=headers)
    return settings["trace_rate"] if protocol == "http" else settings.settings["trace_rate"].value[0]


def shared_memory_regions(connection, protocol: str, headers: dict) -> list[str]:
    status = connection.get_system_shared_memory_status(headers=headers)
    return [region["name"] for region in status] if protocol == "http" else list(status.regions)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_admin_key_opens_the_control_plane_on_every_replica(operated, protocol, tmp_path):
    """The positive control of every refusal above: with the operator's key each call works, on each
    replica, and the settings read back; without it, the same call is refused, saying why."""
    key = admin_headers(protocol, operated.admin_key)
    assert len(operated.servers) == len(operated.server_urls[protocol]) == 2
    for pid, url in zip(operated.servers, operated.server_urls[protocol]):
        connection = client(url, protocol)
        marker = tmp_path / f"ran on {url}"
        assert refusal(protocol, admin.ADMIN_HEADER) in refused(lambda: evil_load(connection, marker))
        evil_load(connection, marker, headers=key)
        assert marker.read_text() == "ran"
        connection.unload_model("evil", headers=key)

        assert refusal(protocol, admin.ADMIN_HEADER) in refused(
            lambda: connection.update_log_settings({"log_verbose_level": 1}))
        connection.update_log_settings({"log_verbose_level": 1}, headers=key)
        assert log_verbosity(connection, protocol, key) == 1
        connection.update_log_settings({"log_verbose_level": 0}, headers=key)
        assert log_verbosity(connection, protocol, key) == 0

        assert refusal(protocol, admin.ADMIN_HEADER) in refused(
            lambda: connection.update_trace_settings(settings={"trace_rate": "123"}))
        rate = trace_rate(connection, protocol, key)
        connection.update_trace_settings(settings={"trace_rate": "123"}, headers=key)
        assert trace_rate(connection, protocol, key) == "123"
        connection.update_trace_settings(settings={"trace_rate": rate}, headers=key)
        assert trace_rate(connection, protocol, key) == rate

        region = f"ser_test_region_{protocol}_{pid}"
        isolation.shm_path(pid, region).write_bytes(bytes(4096))  # where this server's /dev/shm is
        try:
            assert refusal(protocol, admin.ADMIN_HEADER) in refused(
                lambda: connection.register_system_shared_memory("probe", "/" + region, 4096))
            connection.register_system_shared_memory("probe", "/" + region, 4096, headers=key)
            assert shared_memory_regions(connection, protocol, key) == ["probe"]
            connection.unregister_system_shared_memory("probe", headers=key)
            assert shared_memory_regions(connection, protocol, key) == []
        finally:
            isolation.shm_path(pid, region).unlink(missing_ok=True)
    assert "WARNING: the admin key is a tritonserver argument" in operated.said


def attack_as_a_second_local_user(served: Launched, look_for: list[str], paths: list[Path]) -> dict:
    """tests/local_attacker.py as another user, against the edge's, every server's and gateway's ports."""
    targets = {"ports": {"http": [int(u.rsplit(":", 1)[1]) for u in [*served.every_url("http"),
                                                                      *served.socket_urls]],
                         "grpc": [int(u.rsplit(":", 1)[1]) for u in [*served.every_url("grpc"),
                                                                      *served.gateway_urls]]},
               "pids": sorted(served.members()), "look_for": look_for}
    done = subprocess.run(["setpriv", f"--reuid={SECOND_USER}", f"--regid={SECOND_USER}", "--clear-groups",
                           sys.executable, str(REPO_ROOT / "tests" / "local_attacker.py"), *map(str, paths)],
                          input=json.dumps(targets), capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def edge_config_path(served: Launched) -> Path:
    [nginx] = [pid for pid, name in served.members().items() if name == "nginx" and
               Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: master")]
    arguments = Path(f"/proc/{nginx}/cmdline").read_bytes().decode()
    return Path(re.search(r"-c (\S+)", arguments).group(1))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second local user (setpriv) needs root")


@needs_root
def test_a_second_local_user_finds_nothing_that_opens_the_control_plane(launched, tiny_repository):
    found = attack_as_a_second_local_user(launched, [CANARY], [tiny_repository, launched.logs,
                                                                 edge_config_path(launched).parent])
    assert [admin.CLOSED_HEADER, admin.CLOSED_VALUE] in found["pairs"]  # it read the flags: worth nothing
    ours = set(launched.every_url("http") + launched.every_url("grpc") + launched.gateway_urls + launched.socket_urls)
    assert len(launched.socket_urls) == len(launched.servers)  # each gateway's WebSocket was attacked too
    assert not [s for s in found["successes"] if f"127.0.0.1:{s.split()[1]}" in ours], found["successes"]
    assert found["found"] == {CANARY: []}  # not in any command line, environment or file it could read
    assert not [f for f in found["files_read"] if f.startswith(str(launched.logs))]  # logs are 0600
    assert found["shm_seen"] == [] and found["shm_opened"] == []  # the servers' /dev/shm is their own


@needs_root
def test_the_same_attack_gets_in_where_an_operator_set_an_admin_key(operated):
    """The positive control of the attack: the key an operator gives tritonserver is in the process list."""
    found = attack_as_a_second_local_user(operated, [operated.admin_key], [])
    assert [admin.ADMIN_HEADER, operated.admin_key] in found["pairs"]
    for url in operated.server_urls["http"]:
        assert f"HTTP {url.rsplit(':', 1)[1]} as is: HTTP/1.1 200 OK" in found["successes"]
    for url in operated.server_urls["grpc"]:
        assert f"gRPC {url.rsplit(':', 1)[1]} {admin.ADMIN_HEADER}: OK" in found["successes"]
    assert found["found"][operated.admin_key]


def test_what_the_servers_write_is_theirs_alone(launched):
    for log in launched.logs.glob("*.log"):
        assert log.stat().st_mode & 0o777 == 0o600, log
    for pid in launched.servers:
        assert isolation.has_private_shm(pid)
        assert isolation.shm_path(pid, "").stat().st_mode & 0o777 == 0o700
        regions = processes.shared_memory_files(pid, SHM_PREFIX)
        assert regions and all(isolation.shm_path(pid, name).exists() for name in regions)
        assert not any(Path("/dev/shm", name).exists() for name in regions)  # not in the shared /dev/shm


PROBE_SHM = """
import subprocess, sys
from ser_triton.serving import isolation
shown = subprocess.run(["sh", "-c", "id -u; stat -c %a /dev/shm; touch /dev/shm/probe; stat -c %a /dev/shm/probe"],
                       preexec_fn=isolation.confined(), capture_output=True, text=True, check=True)
print(shown.stdout, end="")
"""


@needs_root
def test_a_server_started_by_another_user_gets_a_private_dev_shm_too(tmp_path):
    """Not root (`make serve` on a workstation): the same confinement, in a user namespace that maps
    the user to itself; the child keeps its uid, its /dev/shm is its own and its files are 0600."""
    done = subprocess.run(["setpriv", f"--reuid={SECOND_USER}", f"--regid={SECOND_USER}", "--clear-groups",
                           sys.executable, "-c", PROBE_SHM], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(SECOND_USER), "700", "600"]
    assert not Path("/dev/shm/probe").exists()


def stream_message(url: str, samples: int) -> str:
    """One stream message carrying `samples` float32 samples (no client check on its size); the error."""
    errors, done = [], threading.Event()
    with grpcclient.InferenceServerClient(url, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE)]) as connection:
        connection.start_stream(lambda result=None, error=None: (errors.append(error), done.set()))
        chunk = grpcclient.InferInput(contract.CHUNK, [1, samples], "FP32")
        chunk.set_data_from_numpy(np.zeros((1, samples), np.float32))
        rate = grpcclient.InferInput(contract.CHUNK_RATE, [1, 1], "INT32")
        rate.set_data_from_numpy(np.array([[contract.SAMPLE_RATE]], np.int32))
        connection.async_stream_infer(contract.STREAM, [chunk, rate], request_id="0", sequence_id=91,
                                      sequence_start=True)
        assert done.wait(120), "no answer to an oversize stream message"
        connection.stop_stream(cancel_requests=True)
    return str(errors[0])


def test_oversize_bodies_and_stream_messages_are_refused_before_buffering(launched):
    audio = utterance(2.0, 7)[None]
    expected = {p: infer(client(launched.edge_url(p), p), p, audio) for p in PROTOCOLS}
    stop, answers, failures = threading.Event(), [], []

    def good_traffic(protocol):
        connection = client(launched.edge_url(protocol), protocol)
        while not stop.is_set():
            try:
                answers.append((protocol, infer(connection, protocol, audio)))
            except Exception as error:  # noqa: BLE001 - every failure is a finding
                failures.append(f"{protocol}: {error}")

    memory = PeakMemory(launched.members())  # nginx, the gateways, the servers and their Python stubs
    workers = [threading.Thread(target=good_traffic, args=(p,)) for p in PROTOCOLS]
    for worker in workers:
        worker.start()
    huge = np.zeros((1, OVERSIZE_BYTES // 4), np.float32)
    try:
        for protocol in PROTOCOLS:
            module = grpcclient if protocol == "grpc" else httpclient
            tensor = module.InferInput(contract.AUDIO, list(huge.shape), "FP32")
            tensor.set_data_from_numpy(huge)
            message = refused(lambda: client(launched.edge_url(protocol), protocol).infer(contract.ENSEMBLE, [tensor]))
            assert ("413" if protocol == "http" else "RESOURCE_EXHAUSTED") in message
            assert f"over {edge.max_request_bytes(contract.MAX_SECONDS)} bytes" in message
            assert "at most 30 s" in message
        del tensor
        for url in [launched.edge_url("grpc"), *launched.gateway_urls]:  # one stream message: at most one chunk
            message = stream_message(url, OVERSIZE_BYTES // 4)
            assert "RESOURCE_EXHAUSTED" in message, message
            sent = re.search(rf"larger than max \((\d+) vs\. {max_message_bytes()}\)", message)
            assert sent and int(sent.group(1)) > OVERSIZE_BYTES, message
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)
    growth = memory.growth()
    assert max(growth.values()) < 16, f"peak growth (MiB) for bodies the edge refused: {growth}"
    assert not failures, failures
    assert {p for p, _ in answers} == set(PROTOCOLS)
    for protocol, (emotions, probabilities, transcripts) in answers:
        np.testing.assert_allclose(probabilities, expected[protocol][1], atol=1e-5)
        assert transcripts == expected[protocol][2]
    assert "client intended to send too large" in launched.logs_text()


MEASURED_MIB = 64
"""An oversize message the measure must see: Triton reads it whole, and the stream model gets all of it."""


def test_a_stream_message_sent_to_a_servers_own_port_is_read_whole_then_refused(launched):
    """The residual: at a server's own (loopback) port nothing bounds a message. The measure that
    finds no growth above sees this one in tritonserver and in the stream model's stub (the positive
    control of that measure); the server refuses the chunk and goes on serving."""
    pid, url = launched.servers[0], launched.server_urls["grpc"][0]
    memory = PeakMemory(launched.members())
    message = stream_message(url, MEASURED_MIB * 1024 * 1024 // 4)
    assert f"holds {MEASURED_MIB * 1024 * 1024 / 4 / contract.SAMPLE_RATE:.1f} s: send chunks of at most 10 s" \
        in message, message
    growth = memory.growth()
    [stub] = [pid_ for pid_, model in processes.stubs(pid).items() if model == contract.STREAM]
    assert growth[f"tritonserver {pid}"] >= MEASURED_MIB - 4, growth
    assert growth[f"triton_python_b {stub}"] >= MEASURED_MIB - 4, growth
    assert client(url, "grpc").is_model_ready(contract.STREAM)


def test_a_body_just_within_the_bound_is_served(launched):
    """The bound is the ensemble's own limit: the longest audio it accepts still passes the edge."""
    longest = utterance(contract.MAX_SECONDS, 3)[None]
    for protocol in PROTOCOLS:
        emotions, _, _ = infer(client(launched.edge_url(protocol), protocol), protocol, longest)
        assert len(emotions) == 1


class _Recording(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


class _RecordingGrpc(grpc.GenericRpcHandler):
    """Any gRPC method: records its metadata, answers empty messages (an empty protobuf is valid)."""

    def __init__(self):
        self.seen = []

    def service(self, details):
        self.seen.append((details.method, dict(details.invocation_metadata)))
        if details.method.endswith(METHOD):
            return grpc.stream_stream_rpc_method_handler(lambda requests, context: (b"" for _ in requests))
        return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")


@contextmanager
def recording_edge(tmp: Path, settings: edge.EdgeSettings):
    """The edge (and a stream gateway) in front of an HTTP and a gRPC server that record what reaches them."""
    handler = type("Recording", (_Recording,), {"seen": []})
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    recorder = _RecordingGrpc()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[recorder])
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    gateway = StreamGateway("127.0.0.1", free_port(), [f"127.0.0.1:{grpc_port}"], tmp / "stream_gateway.log").start()
    front = edge.Edge("127.0.0.1", free_port(), free_port(), [edge.Upstream("127.0.0.1", http_server.server_port,
                                                                           grpc_port)],
                      settings, tmp / "nginx.log", stream_upstreams=[gateway.url])
    try:
        front.start()
        handler.seen.clear()  # the edge's own readiness check
        recorder.seen.clear()
        yield front, handler.seen, recorder.seen
    finally:
        front.close()
        gateway.stop()
        grpc_server.stop(0)
        http_server.shutdown()


CREDENTIALS = {"authorization": "Bearer a-client-key-of-enough-length", admin.ADMIN_HEADER: "an-admin-key-0123456789",
               f"triton-grpc-protocol-{admin.ADMIN_HEADER}": "an-admin-key-0123456789"}
UPGRADE = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
           "Sec-WebSocket-Protocol": f"{contract.STREAM_SOCKET_SUBPROTOCOL}, "
                                     f"{socket_key_protocol('a-client-key-of-enough-length')}"}
"""A WebSocket's opening, with a client key offered as a subprotocol."""
PROBE = ("x-ser-probe", "arrives")
"""A header the edge does not drop: the positive control that the recording sees what is passed on."""


def test_the_edge_drops_credentials_and_admin_keys_before_the_servers(tmp_path):
    with recording_edge(tmp_path, edge.EdgeSettings()) as (front, http_seen, grpc_seen):
        for path, body, more in [("/v2/health/ready", None, {}), ("/v2/models/ser", None, {}),
                                 ("/v2/models/ser/infer", b"{}", {}), (contract.STREAM_SOCKET_PATH, None, UPGRADE)]:
            request = urllib.request.Request(f"http://{front.http_url}{path}", data=body,
                                             headers={**CREDENTIALS, PROBE[0]: PROBE[1], **more})
            urllib.request.urlopen(request, timeout=30).close()
        metadata = [*CREDENTIALS.items(), PROBE]
        with grpc.insecure_channel(front.grpc_url) as channel:
            for method in ("ServerReady", "ModelMetadata", "ModelInfer"):
                channel.unary_unary(f"/{SERVICE}/{method}")(b"", metadata=metadata, timeout=30)
            answers = list(channel.stream_stream(f"/{SERVICE}/{METHOD}")(iter([b"", b""]), metadata=metadata,
                                                                           timeout=30))
        assert answers == [b"", b""]
    http_paths = [path for path, _ in http_seen]
    assert set(http_paths) >= {"/v2/models/ser", "/v2/models/ser/infer", contract.STREAM_SOCKET_PATH}, http_paths
    [socket_headers] = [headers for path, headers in http_seen if path == contract.STREAM_SOCKET_PATH]
    assert socket_headers["upgrade"] == "websocket"  # the Upgrade goes on; the key among the subprotocols does not
    assert socket_headers["sec-websocket-protocol"] == contract.STREAM_SOCKET_SUBPROTOCOL
    grpc_methods = {method.rsplit("/", 1)[1] for method, _ in grpc_seen}
    assert grpc_methods >= {"ServerReady", "ModelMetadata", "ModelInfer", METHOD}, grpc_methods
    for where, headers in [*http_seen, *grpc_seen]:
        assert headers.get(PROBE[0]) == PROBE[1], (where, headers)
        assert not set(CREDENTIALS) & set(headers), (where, headers)


def test_the_peak_measure_sees_a_body_that_nginx_buffers(tmp_path):
    """The measure's positive control at the edge: an edge whose bound is large buffers a body within
    it in memory, and its worker's peak shows it."""
    body = 48 * 1024 * 1024
    with recording_edge(tmp_path, edge.EdgeSettings(max_audio_seconds=1000)) as (front, http_seen, _):
        nginx = {pid: "nginx" for pid in processes.group_members(front.process.pid)}
        memory = PeakMemory(nginx)
        request = urllib.request.Request(f"http://{front.http_url}/v2/models/ser/infer", data=bytes(body))
        urllib.request.urlopen(request, timeout=60).close()
        growth = memory.growth()
    assert max(growth.values()) >= body / 2 ** 20 - 4, growth
    assert http_seen[-1][0] == "/v2/models/ser/infer"


def assert_no_secret_once_stopped(served: Launched, secrets: list[str]) -> None:
    """Stop the launcher; then none of `secrets` is in anything it wrote: its output, every log."""
    served.close()
    text = served.said + served.logs_text()
    assert "ready:" in served.said and "Started GRPCInferenceService" in text  # the output was read
    assert sorted(p.name for p in served.logs.glob("*.log")) >= ["nginx.log"]
    for secret in secrets:
        assert secret not in text


def test_no_secret_reaches_the_output_or_the_logs_once_stopped(launched):
    """After the requests above and the stop: no secret of the launcher's environment in what it wrote."""
    assert_no_secret_once_stopped(launched, [CANARY])


def test_no_secret_reaches_the_output_or_the_logs_over_a_whole_run(operated):
    """After requests (the tests above), a restart and a stop: the admin key and a secret in the
    launcher's environment are in no line the launcher wrote and in no log; the restarted replica's
    log holds both servers' lines."""
    first = operated.servers[0]
    stub = next(iter(processes.stubs(first)))
    os.kill(stub, signal.SIGKILL)
    restarted = []

    def read_until_restarted():
        for line in operated.process.stdout:
            operated.said += line
            if "replica 1 is ready again" in line:
                restarted.append(line)
                return

    reader = threading.Thread(target=read_until_restarted, daemon=True)
    reader.start()
    reader.join(180)
    assert restarted, operated.said
    assert f"replica 1 (127.0.0.1:{operated.server_urls['http'][0].rsplit(':', 1)[1]}): the Python step of " \
           "model" in operated.said
    assert_no_secret_once_stopped(operated, [operated.admin_key, CANARY])
    first_log = (operated.logs / "tritonserver.1.log").read_text()
    assert first_log.count("Started GRPCInferenceService") == 2  # the restarted server appended


@pytest.fixture(scope="module")
def secured(tiny_repository, tmp_path_factory):
    """make serve with client keys and TLS at the edge."""
    tmp = tmp_path_factory.mktemp("secured")
    certificate, key = self_signed_certificate(tmp)
    keys = ["k-" + base64.urlsafe_b64encode(os.urandom(24)).decode(), "second-key-" + "x" * 16]
    (tmp / "keys.txt").write_text("# one key a line\n" + "\n".join(keys) + "\n")
    served = Launched(tiny_repository, tmp, "--client-keys", str(tmp / "keys.txt"),
                      "--tls-certificate", str(certificate), "--tls-key", str(key))
    served.keys, served.certificate = keys, certificate
    yield served
    served.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_keys_and_tls_at_the_edge(secured, protocol):
    url = secured.edge_url(protocol)
    tls = {"tls": True, "tls_ca_certificate": secured.certificate}
    sample = utterance(1.5, 11)
    for key in secured.keys:
        with SERClient(url, protocol, retries=0, api_key=key, **tls) as keyed:
            assert keyed.ready()
            assert keyed.classify(sample, sample_rate=contract.SAMPLE_RATE).label in contract.LABELS
    for key in (None, "a-wrong-key-of-enough-length"):
        with SERClient(url, protocol, retries=0, api_key=key, **tls) as unkeyed:
            assert unkeyed.ready()  # health stays open: load balancers and probes carry no key
            with pytest.raises(Exception, match="needs a valid client key"):
                unkeyed.classify(sample, sample_rate=contract.SAMPLE_RATE)
    with SERClient(url, protocol, retries=0, api_key=secured.keys[0]) as plain:  # no TLS: nothing is served
        assert not plain.ready()


def test_the_cli_takes_the_key_from_the_environment_and_tls(secured, tmp_path):
    sample = tmp_path / "sample.wav"
    import soundfile
    soundfile.write(sample, utterance(1.5, 12), contract.SAMPLE_RATE)
    command = ["python", "client/infer.py", str(sample), "--json", "--url", secured.edge_url("grpc"), "--tls",
               "--tls-ca-certificate", str(secured.certificate), "--retries", "0"]
    from tests.conftest import REPO_ROOT
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    keyed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                           env={**env, "SER_API_KEY": secured.keys[1]}, timeout=120)
    assert keyed.returncode == 0, keyed.stderr
    assert json.loads(keyed.stdout)["label"] in contract.LABELS
    unkeyed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert unkeyed.returncode == 1
    assert "needs a valid client key" in unkeyed.stderr and "Traceback" not in unkeyed.stderr


def test_a_bad_client_keys_file_is_one_line_before_any_model_loads(tiny_repository, tmp_path):
    (tmp_path / "keys.txt").write_text("short\n")
    from tests.server_helpers import launcher_command
    from tests.conftest import REPO_ROOT
    done = subprocess.run(launcher_command(tiny_repository, free_ports(), "--client-keys", str(tmp_path / "keys.txt")),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert re.search(r"key 1 in .*keys.txt must be 16 to 256 letters", done.stderr), done.stderr
    assert "Traceback" not in done.stderr and "tritonserver" not in done.stderr


def routes(config: str) -> dict[str, str]:
    """location pattern -> its block, for every location of a rendered edge config."""
    found = {}
    for match in re.finditer(r"location\s+([^{]+?)\s*\{", config):
        depth, index = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(config[index], 0)
            index += 1
        found[match.group(1)] = config[match.end():index - 1]
    return found


@pytest.mark.parametrize("settings", [edge.EdgeSettings(), edge.EdgeSettings(models=("ser",))])
def test_the_edge_config_has_no_catch_all_route_and_forwards_only_the_clients_routes(settings, tmp_path):
    config = edge.render(settings, [edge.Upstream("127.0.0.1", 1, 2)], host="127.0.0.1", http_port=8000,
                         grpc_port=8001, work=tmp_path, error_log="stderr")
    forwarding = {pattern: block for pattern, block in routes(config).items()
                  if "proxy_pass" in block or "grpc_pass" in block}
    assert "/" not in forwarding and not any(p.strip('"') in ("/", "~ ^/", "^/") for p in forwarding)
    models = "|".join(re.escape(m) for m in settings.models)
    for pattern, block in forwarding.items():
        assert not re.search("repository|logging|trace|sharedmemory", pattern, re.IGNORECASE), pattern
        if pattern.endswith('/infer$"'):  # HTTP inference: only the served models, bounded
            assert pattern.startswith(f'~ "^/v2/models/({models})') and "limit_except POST" in block
            assert f"client_max_body_size {settings.max_body_bytes};" in block
        elif pattern.endswith("/ModelInfer"):
            assert f"client_max_body_size {settings.max_body_bytes};" in block
        elif pattern.endswith("/ModelStreamInfer"):  # a live stream: every chunk is one body
            assert f"client_max_body_size {settings.max_stream_body_bytes};" in block
        elif "GRPCInferenceService" in pattern:
            assert "client_max_body_size" not in block
        elif pattern == f"= {contract.STREAM_SOCKET_PATH}":  # a WebSocket: keyed, GET, credentials dropped here too
            assert "if ($ser_stream_key_ok = 0) { return 401" in block and "limit_except GET { deny all; }" in block
            for header in ("Authorization", admin.ADMIN_HEADER, f"triton-grpc-protocol-{admin.ADMIN_HEADER}"):
                assert f'proxy_set_header {header} "";' in block  # a location's own headers replace the server's
            assert "proxy_set_header Sec-WebSocket-Protocol $ser_socket_protocol;" in block
        else:  # HTTP: health and read-only metadata, GET only
            assert "limit_except GET { deny all; }" in block, pattern
            assert "/v2/health/" in pattern or pattern.startswith(("= /v2", '~ "^/v2/models')), pattern
    grpc_methods = set(re.findall(r"\b([A-Z][A-Za-z]+)\b", " ".join(p for p in forwarding if "GRPC" in p)))
    assert grpc_methods - {"GRPCInferenceService"} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
        "ModelStatistics", "ModelInfer", "ModelStreamInfer"}
    assert "client_max_body_size 16k;" in config  # everywhere else
    page = {pattern: block for pattern, block in routes(config).items() if "try_files" in block}
    files = sorted(path.name for path in edge.WEB.iterdir() if path.name != edge.PAGE)
    assert set(page) == {"= /", f'~ "^/({"|".join(re.escape(name) for name in files)})$"'}, sorted(page)
    for block in page.values():  # the page's own files, under its policy, GET only
        assert "limit_except GET { deny all; }" in block and "_pass" not in block
        assert f'add_header Content-Security-Policy "{edge.PAGE_HEADERS["Content-Security-Policy"]}" always;' in block


def socket_url(served: Launched, scheme: str = "wss") -> str:
    return f"{scheme}://{served.edge_url('http')}{contract.STREAM_SOCKET_PATH}"


def test_a_socket_needs_a_valid_client_key_where_keys_are_set(secured):
    """Browsers set no headers on a WebSocket, so the key may come as an offered subprotocol; without a
    valid one (or the header) the edge refuses the socket, saying why; with one, it streams, and the
    key is in no answer. Over TLS (wss), as the edge serves it; a plain socket to it is refused."""
    context = ssl.create_default_context(cafile=str(secured.certificate))
    frames, offered = framed(utterance(1.5, 11), 0.5), contract.STREAM_SOCKET_SUBPROTOCOL
    refusals = {"no key": {}, "a wrong key": {"subprotocols": [offered, socket_key_protocol("a-wrong-key-" + "x" * 8)]},
                "a wrong header": {"additional_headers": {"Authorization": "Bearer a-wrong-key-of-enough-length"}}}
    for name, given in refusals.items():
        with pytest.raises(websockets.InvalidStatus) as refused:
            talk(socket_url(secured), start_message(), frames, ssl=context, **given)
        response = refused.value.response
        assert response.status_code == 401 and b"needs a valid client key" in response.body, name
        assert b"subprotocol" in response.body  # it says how a browser sends one
    for given in [{"subprotocols": [offered, socket_key_protocol(key)]} for key in secured.keys] + [
            {"additional_headers": {"Authorization": f"Bearer {secured.keys[0]}"}}]:  # the positive controls
        result = talk(socket_url(secured), start_message(), frames, ssl=context, **given)
        assert result.messages[-1] == {"event": "end"} and result.code == 1000, result.messages
        answers = json.dumps(result.messages)
        assert not any(key in answers or socket_key_protocol(key) in answers for key in secured.keys)
    with pytest.raises(websockets.InvalidStatus) as plain:
        talk(socket_url(secured, "ws"), start_message(), frames, subprotocols=[offered, socket_key_protocol(
            secured.keys[0])])
    assert plain.value.response.status_code == 400 and b"speaks TLS only" in plain.value.response.body


def test_no_client_key_reaches_the_output_or_the_logs_once_stopped(secured):
    assert_no_secret_once_stopped(secured, [*secured.keys, *map(socket_key_protocol, secured.keys), CANARY])
