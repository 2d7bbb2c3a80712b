"""Stopping loses no request (docs/reliability.md). Triton 2.51, stopped with ensemble requests in flight,
refuses their next steps ("Server is stopping") and leaves a request whose other branch still runs
unanswered for good, waiting its whole exit timeout for it (fixed in Triton's core in 2026). So nothing
may reach a server once it stops: the edge drains first, and the server stops idle.

- `make serve` and the CPU image: SIGTERM to the launcher with gRPC and HTTP requests in flight through
  its edge: each one answered right, and the server's log says it stopped with none in flight.
- The Kubernetes edge's entrypoint drains on SIGTERM as the launcher drains its edge: requests that
  the upstream holds at SIGTERM are answered, new connections are refused; SIGTERM to nginx itself
  (the pod's process before) cuts them: the control.
- The pods' timings: the server pods sleep before SIGTERM for longer than the edge keeps a connection
  to them; every pod's grace period holds its sleep and its drains.

The container and the pod under podman: tests/test_deploy_container.py."""

import http.client
import inspect
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tritonclient.http as httpclient

from ser_triton.core.contract import ENSEMBLE
from ser_triton.serving import edge
from ser_triton.serving.ports import free_port
from ser_triton.serving.supervisor import TritonServer, ready
from tests.conftest import REPO_ROOT
from tests.deploy_helpers import KUBERNETES, find, render
from tests.server_helpers import (alive, answers_across_a_stop, descendants, end, eventually, free_ports, infer,
                                  start_launcher, utterance)

SERVER_STOP_SECONDS = 30
"""How long a stopping server may take: Triton's exit timeout (its log's exit_timeout: 30), which is
also how long the launcher waits for it (TritonServer.stop)."""

ENDPOINTS_SECONDS = 5
"""What the server pods' preStop sleep allows, besides the edge's connections, for the Service's
endpoints to drop a stopping pod."""


def test_the_edge_drains_and_retires_connections_as_its_config_says():
    """edge.DRAIN_SECONDS, which the launcher waits for, is nginx's worker_shutdown_timeout;
    edge.KEEPALIVE_SECONDS is every upstream's keepalive_time."""
    template = (REPO_ROOT / "serving/edge.conf.template").read_text()
    assert re.search(rf"(?m)^worker_shutdown_timeout {edge.DRAIN_SECONDS}s;", template)
    upstreams = re.findall(r"(?ms)^ *upstream \w+ {.*?^ *}", template)
    assert len(upstreams) >= 3  # HTTP, gRPC, the stream gateways
    assert all(re.search(rf"(?m)^ +keepalive_time {edge.KEEPALIVE_SECONDS}s;", block) for block in upstreams)
    assert inspect.signature(TritonServer.stop).parameters["timeout"].default == SERVER_STOP_SECONDS


def pre_stop_sleep(pod: dict) -> int:
    [container] = [c for c in pod["containers"] if "lifecycle" in c]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


@pytest.mark.parametrize("name", ["cpu", "gpu", "cpu-object-storage", "gpu-object-storage", "local"])
def test_every_pod_sleeps_before_it_stops_and_its_grace_period_holds_its_drains(name):
    documents = render(KUBERNETES / "overlays" / name)
    server = find(documents, "Deployment", "ser-triton")["spec"]["template"]["spec"]
    sleep = pre_stop_sleep(server)
    # the edge has opened its new connections elsewhere and the requests in flight are done
    assert sleep >= ENDPOINTS_SECONDS + edge.KEEPALIVE_SECONDS + 5
    # then the CPU image's launcher drains its edge and stops its server; the GPU image's server stops
    assert server["terminationGracePeriodSeconds"] >= sleep + edge.DRAIN_SECONDS + SERVER_STOP_SECONDS
    edge_pod = find(documents, "Deployment", "ser-triton-edge")["spec"]["template"]["spec"]
    assert edge_pod["terminationGracePeriodSeconds"] >= pre_stop_sleep(edge_pod) + edge.DRAIN_SECONDS


@pytest.mark.server
def test_sigterm_to_the_launcher_answers_every_request_in_flight_and_stops_the_server_idle(tiny_repository,
                                                                                          tmp_path):
    ports = free_ports()
    log = tmp_path / "tritonserver.log"
    launcher, _ = start_launcher(tiny_repository, ports, f"--log-file={log}")
    family = descendants(launcher.pid)
    try:
        urls = {name: f"127.0.0.1:{ports[name]}" for name in ("http", "grpc")}
        audios = [utterance(30, seed) for seed in range(8)]
        client = httpclient.InferenceServerClient(urls["http"], network_timeout=120)
        expected = [infer(client, "http", audio[None]) for audio in audios]
        results, in_flight = answers_across_a_stop(urls["http"], urls["grpc"], audios,
                                                   lambda: launcher.send_signal(signal.SIGTERM))
        assert launcher.wait(120) == 0
        assert in_flight >= 1  # answered after the SIGTERM
        for got, want in zip(results, expected):
            assert isinstance(got, tuple), got
            np.testing.assert_allclose(got[1], want[1], atol=1e-4)
            assert got[2] == want[2]
        stopped = log.read_text(errors="replace")
        assert "Found 0 model versions that have in-flight inferences" in stopped
        assert "Exit timeout expired" not in stopped and "in-flight inferences\"" in stopped
        assert not ready(urls["http"])
    finally:
        end(launcher, family)


class HeldUpstream(ThreadingHTTPServer):
    """A stand-in Triton server on loopback: health answers at once; an inference is held until
    `release` is set, then answered with its own body."""
    daemon_threads = True

    def __init__(self):
        self.held, self.release, self.lock = [], threading.Event(), threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.answer(b"")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with upstream.lock:
                    upstream.held.append(body)
                upstream.release.wait(60)
                self.answer(body)

            def answer(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def post(port: int, body: bytes) -> bytes | Exception:
    """One inference through the edge, on a connection of its own: the answer's body, or what failed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", f"/v2/models/{ENSEMBLE}/infer", body)
        reply = connection.getresponse()
        return reply.read() if reply.status == 200 else RuntimeError(f"HTTP {reply.status}")
    except (OSError, http.client.HTTPException) as error:
        return error
    finally:
        connection.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("stopped", ["the entrypoint", "nginx itself"])
def test_sigterm_drains_the_kubernetes_edge(stopped, tmp_path):
    """The edge Deployment's own command and arguments, in front of an upstream that holds three
    requests: SIGTERM to the entrypoint (as the kubelet sends it) answers all three and refuses new
    connections meanwhile; SIGTERM to nginx itself, as when nginx was the pod's process, cuts them."""
    [container] = find(render(KUBERNETES / "edge"), "Deployment", "ser-triton-edge")["spec"]["template"]["spec"][
        "containers"]
    upstream = HeldUpstream()
    http_port, grpc_port = free_port(), free_port()
    local = {"--host": "127.0.0.1", "--http-port": str(http_port), "--grpc-port": str(grpc_port),
             "--upstream": f"127.0.0.1@{upstream.server_port},{free_port()}"}
    arguments = [local.get(previous, argument)
                 for previous, argument in zip(["", *container["args"]], container["args"])]
    command = [sys.executable if part == "python" else part for part in container["command"]]
    process = subprocess.Popen([*command, *arguments], cwd=REPO_ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert eventually(lambda: ready(f"127.0.0.1:{http_port}"), 30), process.stdout.read()
        answers = [None] * 3
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, post(http_port, b"request %d" % i)))
                   for i in range(3)]
        for thread in threads:
            thread.start()
        assert eventually(lambda: len(upstream.held) == 3, 30)  # in flight: the upstream holds them
        nginx = master(process.pid)
        os.kill(process.pid if stopped == "the entrypoint" else nginx, signal.SIGTERM)
        if stopped == "the entrypoint":
            assert eventually(lambda: refused(http_port), 10)  # no new connection while it drains
        else:
            assert eventually(lambda: not alive(nginx), 10)  # gone before the upstream answers
        upstream.release.set()
        for thread in threads:
            thread.join(60)
        assert process.wait(60) == 0
        if stopped == "the entrypoint":
            assert answers == [b"request %d" % i for i in range(3)]
        else:
            assert all(isinstance(answer, Exception) for answer in answers), answers
    finally:
        upstream.release.set()
        upstream.shutdown()
        if process.poll() is None:  # nginx gets SIGTERM when it dies (serving.lifetime)
            process.kill()
            process.wait()


def master(pid: int) -> int:
    """The nginx master: the entrypoint's child."""
    [child] = [p for p, name in descendants(pid).items() if name == "nginx" and parent(p) == pid]
    return child


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])
