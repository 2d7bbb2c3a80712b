"""The local replica set (`make serve REPLICAS=2`): two tritonserver replicas behind the NGINX edge.

Concurrent clients over gRPC and HTTP, who know only the edge's address, get the reference's
answers from both replicas; a replica killed in mid-run costs no answer, the edge stops
sending to it, and the set restarts it. The kill -9 of a replica-set launcher is in
test_launcher.py (test_a_launcher_killed_hard_takes_its_servers_with_it[2]).
"""

import os
import re
import signal
import subprocess
import threading
from types import SimpleNamespace

import pytest
import soundfile

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.client.library import SERClient
from ser_triton.core.result import Result
from ser_triton.serving import edge, processes
from ser_triton.serving.edge import EdgeSettings
from ser_triton.serving.replicas import ReplicaSet
from ser_triton.serving.supervisor import SHM_PREFIX, ServerError, TritonServer
from tests.conftest import start_server
from tests.server_helpers import alive, assert_same, ensemble_successes, requests_served, utterance

pytestmark = pytest.mark.server
PROTOCOLS = ("grpc", "http")
CLIENTS = 3
"""Concurrent clients per protocol."""

LONG_FAIL_TIMEOUT = 3600.0
"""Once a replica has failed a request, the edge leaves it out for longer than this module runs,
so after the kill every attempt on the dead replica is visible, and none should be made."""


@pytest.fixture(scope="module")
def replica_set(tiny_repository, tmp_path_factory):
    logs = tmp_path_factory.mktemp("replica-logs")
    replicas = ReplicaSet(start_server(tiny_repository, log_path=logs / "tritonserver.log"), replicas=2,
                          settings=EdgeSettings(fail_timeout=LONG_FAIL_TIMEOUT))
    with replicas:
        yield replicas
        family = family_of(replicas)
    left = {pid: name for pid, name in family.items() if alive(pid)}
    assert family and not left, f"still running after the replica set stopped: {left}"


def family_of(replicas: ReplicaSet) -> dict[int, str]:
    """The processes of the set that are running now: servers, their stubs, the stream gateways, nginx
    and its worker."""
    found = {}
    for server in [*replicas.servers, *replicas.gateways, replicas.edge]:
        if server.process is not None:
            found[server.process.pid] = "server"
            found.update({pid: "group member" for pid in processes.group_members(server.process.pid)})
    return found


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> list:
    """Speech-like utterances of different lengths, as files (both protocols send the same ones)."""
    folder = tmp_path_factory.mktemp("replica-audio")
    paths = []
    for seed, seconds in enumerate([0.7, 1.9, 1.1, 2.6, 0.5, 1.5, 3.2, 0.9, 2.2, 1.3, 0.6, 1.7]):
        path = folder / f"utterance{seed}.wav"
        soundfile.write(path, utterance(seconds, seed), SAMPLE_RATE)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def reference(tiny_reference, workload) -> dict:
    return {path: tiny_reference.classify(load_audio(path), str(path)) for path in workload}


def classify_concurrently(replicas: ReplicaSet, paths: list, on_result=None,
                          retries: dict[str, int] | None = None) -> dict[str, list]:
    """Every path over each protocol, both protocols at once, through the edge's address only."""
    results = {}

    def run(protocol):
        url = replicas.grpc_url if protocol == "grpc" else replicas.http_url
        with SERClient(url, protocol, retries=(retries or {}).get(protocol, 3), backoff=0.2) as client:
            results[protocol] = client.classify_many(paths, concurrency=CLIENTS, on_result=on_result)

    threads = [threading.Thread(target=run, args=(protocol,)) for protocol in PROTOCOLS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_answers_right(results: dict[str, list], reference: dict, paths: list) -> None:
    assert set(results) == set(PROTOCOLS)
    for protocol, outcomes in results.items():
        for path, outcome in zip(paths, outcomes, strict=True):
            assert isinstance(outcome, Result), f"{protocol} {path.name}: {outcome!r}"
            assert_same(outcome, reference[path], atol=1e-4)


def upstreams_of(replica) -> set[str]:
    return {f"{replica.host}:{replica.http_port}", f"{replica.host}:{replica.grpc_port}"}


def failed_upstreams(error_log: str) -> list[str]:
    """host:port of every request the edge could not pass on, from nginx's error log."""
    return re.findall(r'\[error\].*upstream: "\w+://([^/"]+)', error_log)


def attempts_on(replica, error_log: str) -> int:
    """Requests the edge tried to pass to this replica and could not, from nginx's error log."""
    return sum(1 for upstream in failed_upstreams(error_log) if upstream in upstreams_of(replica))


EDGE_LOG = """\
2026/12/01 19:36:53 [error] 13071#13071: *15 upstream prematurely closed connection while reading response header \
from upstream, client: 127.0.0.1, server: , request: "POST /v2/models/ser/infer HTTP/1.1", upstream: \
"http://127.0.0.1:35143/v2/models/ser/infer", host: "127.0.0.1:52391"
2026/12/01 19:36:53 [warn] 13071#13071: *15 upstream server temporarily disabled while reading response header \
from upstream, client: 127.0.0.1, server: , request: "POST /v2/models/ser/infer HTTP/1.1", upstream: \
"http://127.0.0.1:35143/v2/models/ser/infer", host: "127.0.0.1:52391"
2026/12/01 19:36:53 [error] 13071#13071: *3 upstream prematurely closed connection while reading response header \
from upstream, client: 127.0.0.1, server: , request: "POST /inference.GRPCInferenceService/ModelInfer HTTP/2.0", \
upstream: "grpc://127.0.0.1:46851", host: "127.0.0.1:42883"
2026/12/01 19:36:54 [error] 13071#13071: *21 connect() failed (111: Connection refused) while connecting to upstream, \
client: 127.0.0.1, server: , request: "POST /v2/models/ser/infer HTTP/1.1", upstream: \
"http://127.0.0.1:35199/v2/models/ser/infer", host: "127.0.0.1:52391"
"""
"""What nginx logged when a replica (HTTP 35143, gRPC 46851) was killed in mid-run (the first three
lines), and a failed connection to another replica (HTTP 35199)."""


def test_the_log_check_counts_each_failed_attempt_on_a_replica_over_either_protocol():
    """attempts_on, on lines nginx wrote: one per [error] whose upstream is one of the replica's
    ports; the [warn] that follows names the same request and is not counted twice."""
    dead = SimpleNamespace(host="127.0.0.1", http_port=35143, grpc_port=46851)
    other = SimpleNamespace(host="127.0.0.1", http_port=35199, grpc_port=46899)
    assert attempts_on(dead, EDGE_LOG) == 2
    assert attempts_on(other, EDGE_LOG) == 1
    assert attempts_on(SimpleNamespace(host="127.0.0.1", http_port=1, grpc_port=2), EDGE_LOG) == 0
    assert set(failed_upstreams(EDGE_LOG)) == upstreams_of(dead) | {"127.0.0.1:35199"}


def test_concurrent_clients_over_grpc_and_http_get_the_reference_answers_from_both_replicas(
        replica_set, workload, reference):
    before = [ensemble_successes(server) for server in replica_set.servers]
    results = classify_concurrently(replica_set, workload)
    assert_answers_right(results, reference, workload)
    sent = len(PROTOCOLS) * len(workload)
    served = requests_served(replica_set.servers, before, sent)
    assert sum(served) == sent and min(served) > 0, served  # each request once, and both replicas work


def test_a_replica_killed_in_mid_run_costs_no_answer_and_leaves_the_rotation(replica_set, workload, reference):
    victim, survivor = replica_set.servers
    victim_stubs = set(victim.stubs())
    victim_shm = processes.shared_memory_files(victim.process.pid, SHM_PREFIX)
    sent = len(PROTOCOLS) * len(workload)
    answered, answered_at_kill, enough, lock = [0], [], threading.Event(), threading.Lock()
    error_log = replica_set.edge.log_path
    log_at_kill = []

    def count(index, outcome):
        with lock:
            answered[0] += 1
            if answered[0] >= sent // 4:
                enough.set()

    def kill_the_victim():
        if enough.wait(120):
            with lock:
                answered_at_kill.append(answered[0])
                log_at_kill.append(error_log.stat().st_size)
                os.kill(victim.process.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_victim)
    killer.start()
    # nginx passes an HTTP request that the dead replica dropped on to the live one by itself (the body
    # is buffered); a gRPC body is streamed, so nginx answers UNAVAILABLE and the client's retry does it.
    results = classify_concurrently(replica_set, workload, on_result=count, retries={"http": 0, "grpc": 3})
    killer.join()
    assert victim.process.poll() == -signal.SIGKILL and answered_at_kill[0] < sent, "not killed in mid-run"
    assert_answers_right(results, reference, workload)

    # The check below can see attempts on the dead replica: the ones the edge made on it in mid-run,
    # before it left the rotation (requests in flight on it when it died, or sent to it since),
    # which nginx logged as the check reads them.
    seen = error_log.stat().st_size
    with open(error_log, "rb") as log:
        log.seek(log_at_kill[0])
        in_mid_run = log.read(seen - log_at_kill[0]).decode(errors="replace")
    assert attempts_on(victim, in_mid_run) >= 1, in_mid_run
    assert upstreams_of(victim) <= set(failed_upstreams(in_mid_run)), in_mid_run  # over HTTP and over gRPC

    # After the kill: every request goes to the survivor, and not one is tried on the dead replica.
    before = ensemble_successes(survivor)
    results = classify_concurrently(replica_set, workload)
    assert_answers_right(results, reference, workload)
    assert requests_served([survivor], [before], sent) == [sent]
    with open(error_log, errors="replace") as log:
        log.seek(seen)
        assert attempts_on(victim, log.read()) == 0

    # The set's supervision restarts the dead replica; its old stubs and shared memory are gone.
    assert replica_set.check() is None
    assert victim.ready() and victim.process.poll() is None
    assert victim.log_path.read_text().count("Started GRPCInferenceService") == 2  # appended, not overwritten
    assert not any(alive(pid) for pid in victim_stubs)
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in victim_shm)
    with SERClient(victim.grpc_url) as direct:
        assert_same(direct.classify(workload[0]), reference[workload[0]], atol=1e-4)


def test_the_edge_config_names_every_replica_and_passes_nginx_own_check(replica_set, tmp_path):
    config = replica_set.edge.config()
    for server in replica_set.servers:
        assert f"server 127.0.0.1:{server.http_port} max_fails=1" in config
        assert f"server 127.0.0.1:{server.grpc_port} max_fails=1" in config
    assert f"listen {replica_set.grpc_url} http2;" in config
    path = tmp_path / "nginx.conf"
    path.write_text(config.replace(str(replica_set.edge.log_path.resolve()), str(tmp_path / "error.log")))
    check = subprocess.run([str(edge.nginx_binary()), "-t", "-p", str(tmp_path), "-c", str(path),
                            "-e", str(tmp_path / "error.log")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_metrics_ports_that_collide_with_the_edge_are_refused(tiny_repository):
    front = TritonServer(tiny_repository, http_port=8001, grpc_port=8009, metrics_port=8000)
    with pytest.raises(ServerError, match="metrics ports 8000-8002 .* include the HTTP or gRPC port"):
        ReplicaSet(front, replicas=3)
    front.close()


def test_missing_nginx_is_one_line_that_says_how_to_install_it(tiny_repository, monkeypatch):
    monkeypatch.setattr(edge.shutil, "which", lambda *args, **kwargs: None)
    replicas = ReplicaSet(start_server(tiny_repository))
    try:
        with pytest.raises(ServerError, match=r"nginx is not installed.*make setup"):
            replicas.start()
        assert all(server.process is None for server in replicas.servers)  # said before loading any model
    finally:
        replicas.close()

