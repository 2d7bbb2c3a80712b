"""A server safe to expose: tried as an attacker on the same network would, against a real `make serve`.

Through the edge (one server, and two replicas) and at a server's own ports (the admin key's
layer): a model-repository load carrying its own Python runs nothing, `ser` cannot be unloaded,
log and trace settings do not change, shared memory of the host cannot be registered; the same
requests with the admin key work (the positive control: the payload would have run). Oversize
bodies are refused before they are buffered, and good requests meanwhile keep their answers.
Client keys and TLS at the edge; no secret in any output or log.
"""

import base64
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from ser_triton.core import contract
from ser_triton.client.library import SERClient
from ser_triton.serving import admin, edge
from ser_triton.serving.supervisor import SHM_PREFIX
from tests.deploy_helpers import self_signed_certificate
from tests.server_helpers import descendants, end, free_ports, infer, start_launcher, utterance

pytestmark = pytest.mark.server

PROTOCOLS = ("http", "grpc")
OVERSIZE_BYTES = 300 * 1024 * 1024


class Launched:
    """A `make serve` launcher in a subprocess, with what a local attacker-test can learn of it."""

    def __init__(self, repository: Path, tmp: Path, *extra: str):
        self.ports = free_ports()
        self.logs = tmp / "logs"
        self.process, self.said = start_launcher(repository, self.ports, "--log-file",
                                                 str(self.logs / "tritonserver.log"), *extra)
        family = descendants(self.process.pid)
        self.family = family
        self.servers = [pid for pid, name in family.items() if name == "tritonserver"]
        arguments = [Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") for pid in self.servers]
        flag = {name: [next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}-port=")) for args in arguments]
                for name in ("http", "grpc")}
        self.server_urls = {"http": [f"127.0.0.1:{p}" for p in flag["http"]],
                            "grpc": [f"127.0.0.1:{p}" for p in flag["grpc"]]}
        restricted = next(a for a in arguments[0] if a.startswith("--http-restricted-api="))
        self.admin_key = restricted.rsplit("=", 1)[1]  # read as root from /proc, as only this machine can

    def edge_url(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports[protocol]}"

    def logs_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs.glob("*.log"))

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        end(self.process, self.family)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-server", "two-replicas"])
def launched(request, tiny_repository, tmp_path_factory):
    served = Launched(tiny_repository, tmp_path_factory.mktemp("serve"), "--replicas", str(request.param))
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


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_repository_load_with_its_own_code_runs_nothing(launched, protocol, tmp_path):
    marker = tmp_path / "the payload ran"
    at_edge = refused(lambda: evil_load(client(launched.edge_url(protocol), protocol), marker))
    assert "not served here" in at_edge
    for url in launched.server_urls[protocol]:  # past the edge: the admin key's layer
        assert "restricted" in refused(lambda: evil_load(client(url, protocol), marker))
    assert not marker.exists()
    # positive control: with the admin key, the same request does run the payload
    direct = client(launched.server_urls[protocol][0], protocol)
    evil_load(direct, marker, headers=admin_headers(protocol, launched.admin_key))
    assert marker.read_text() == "ran"
    direct.unload_model("evil", headers=admin_headers(protocol, launched.admin_key))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ser_cannot_be_unloaded_and_stays_ready(launched, protocol):
    for url in [launched.edge_url(protocol), *launched.server_urls[protocol]]:
        refused(lambda: client(url, protocol).unload_model(contract.ENSEMBLE))
    for url in [launched.edge_url(protocol), *launched.server_urls[protocol]]:
        assert client(url, protocol).is_model_ready(contract.ENSEMBLE)
    emotions, probabilities, _ = infer(client(launched.edge_url(protocol), protocol), protocol,
                                       utterance(1.0, 5)[None])
    assert len(emotions) == 1 and probabilities.shape == (1, len(contract.LABELS))


def verbosity(url: str, protocol: str, key: str) -> int:
    settings = client(url, protocol).get_log_settings(headers=admin_headers(protocol, key))
    value = settings["log_verbose_level"] if protocol == "http" else settings.settings["log_verbose_level"]
    return int(value if protocol == "http" else value.uint32_param)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_and_trace_settings_cannot_be_changed(launched, protocol):
    for url in [launched.edge_url(protocol), *launched.server_urls[protocol]]:
        connection = client(url, protocol)
        refused(lambda: connection.update_log_settings({"log_verbose_level": 2}))
        refused(lambda: connection.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}))
        refused(lambda: connection.get_log_settings())
    for url in launched.server_urls[protocol]:
        assert verbosity(url, protocol, launched.admin_key) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_of_the_host_cannot_be_registered(launched, protocol):
    own = sorted(p.name for p in Path("/dev/shm").glob(f"{SHM_PREFIX}*"))
    assert own  # the Python backend's own regions: the worst a client could name
    for url in [launched.edge_url(protocol), *launched.server_urls[protocol]]:
        connection = client(url, protocol)
        refused(lambda: connection.register_system_shared_memory("stolen", "/" + own[0], 4096))
    direct = client(launched.server_urls[protocol][0], protocol)
    status = direct.get_system_shared_memory_status(headers=admin_headers(protocol, launched.admin_key))
    assert not (status if protocol == "http" else list(status.regions))


def server_rss_mib(pids) -> float:
    total = 0
    for pid in pids:
        line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
        total += int(line.split()[1]) / 1024
    return total


def test_oversize_bodies_are_refused_before_buffering_and_good_requests_keep_their_answers(launched):
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

    before = server_rss_mib(launched.servers)
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
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)
    growth = server_rss_mib(launched.servers) - before
    assert growth < 16, f"the servers grew by {growth:.0f} MiB for bodies the edge refused"
    assert not failures, failures
    assert {p for p, _ in answers} == set(PROTOCOLS)
    for protocol, (emotions, probabilities, transcripts) in answers:
        np.testing.assert_allclose(probabilities, expected[protocol][1], atol=1e-5)
        assert transcripts == expected[protocol][2]
    assert "client intended to send too large" in launched.logs_text()


def test_a_body_just_within_the_bound_is_served(launched):
    """The bound is the ensemble's own limit: the longest audio it accepts still passes the edge."""
    longest = utterance(contract.MAX_SECONDS, 3)[None]
    for protocol in PROTOCOLS:
        emotions, _, _ = infer(client(launched.edge_url(protocol), protocol), protocol, longest)
        assert len(emotions) == 1


def test_no_secret_reaches_the_output_or_the_logs(launched):
    assert launched.admin_key and len(launched.admin_key) >= 32
    assert launched.admin_key not in launched.said
    assert launched.admin_key not in launched.logs_text()


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
    logs = secured.logs_text() + secured.said
    assert not any(key in logs for key in secured.keys)


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
        else:  # HTTP: health and read-only metadata, GET only
            assert "limit_except GET { deny all; }" in block, pattern
            assert "/v2/health/" in pattern or pattern.startswith(("= /v2", '~ "^/v2/models')), pattern
    grpc_methods = set(re.findall(r"\b([A-Z][A-Za-z]+)\b", " ".join(p for p in forwarding if "GRPC" in p)))
    assert grpc_methods - {"GRPCInferenceService"} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
        "ModelStatistics", "ModelInfer", "ModelStreamInfer"}
    assert "client_max_body_size 16k;" in config  # everywhere else
