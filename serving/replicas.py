"""What `make serve` runs: N bundled tritonserver replicas (1 by default) on loopback behind the edge.

`make serve`, `make serve REPLICAS=2`. Clients see one server where `front` would listen (its
host, HTTP and gRPC ports: the edge, serving/edge.py, listens there and bounds and filters every
request); each replica listens on free loopback ports of its own, where only the edge (and this
machine) reaches it, and replica i (1, 2, ...) serves its metrics on `front`'s host at
METRICS_PORT + i - 1, since metrics are per replica (Prometheus scrapes each, as in a cluster).
Beside each replica runs a stream gateway (serving.stream_gateway), through which the edge sends
live streams, each message bounded to one chunk, and WebSockets (/v1/stream, serving.stream_socket).
The replicas load side by side, everything stops together, and everything dies with the process that
started it. A replica whose server exits, or one of whose Python steps dies (no model control: only a
restart mends it), is restarted when `check()` notices (the edge and the gateways send its requests to
the others meanwhile); one that then fails to start is left out, and the set goes on while one replica
serves.
"""

import dataclasses
import sys

from ser_triton.serving import server_log
from ser_triton.serving.edge import Edge, EdgeSettings, Upstream, served_audio_seconds
from ser_triton.serving.ports import free_port
from ser_triton.serving.stream_gateway import StreamGateway
from ser_triton.serving.supervisor import ServerError, TritonServer, check_exported

LOOPBACK = "127.0.0.1"


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(LOOPBACK)
        if port not in ports:
            ports.append(port)
    return ports


class ReplicaSet:
    def __init__(self, front: TritonServer, replicas: int = 1, settings: EdgeSettings | None = None):
        """`front`: the one server this set stands in for (repository, flags, where clients connect,
        the metrics port of replica 1, the log: with several replicas tritonserver.log gives
        tritonserver.1.log, ...; nginx.log and stream_gateway.log beside it). `settings`: the edge's (client keys, TLS,
        how long a failed replica is left out); its audio bound is always the repository's own."""
        if replicas < 1:
            raise ValueError(f"a replica set needs at least 1 replica, not {replicas}")
        metrics_ports = [front.metrics_port + i for i in range(replicas)]
        if {front.http_port, front.grpc_port} & set(metrics_ports):
            raise ServerError(f"the replicas' metrics ports {metrics_ports[0]}-{metrics_ports[-1]} (METRICS_PORT and "
                              f"the next {replicas - 1}) include the HTTP or gRPC port: choose other ports")
        self.front = front
        check_exported(front.repository)
        internal = _free_ports(4 * replicas)
        self.servers = [dataclasses.replace(front, host=LOOPBACK, http_port=internal[4 * i],
                                            grpc_port=internal[4 * i + 1], metrics_host=front.host,
                                            metrics_port=metrics_ports[i], extra_args=list(front.extra_args),
                                            log_path=front.log_path if replicas == 1
                                            else self._log(f"{front.log_path.stem}.{i + 1}"))
                        for i in range(replicas)]
        # gateway i sends streams to every live replica (its own first in the list), so a restarting one costs none
        self.gateways = [StreamGateway(LOOPBACK, internal[4 * i + 2],
                                       [s.grpc_url for s in self.servers[i:] + self.servers[:i]],
                                       self._log("stream_gateway" if replicas == 1 else f"stream_gateway.{i + 1}"),
                                       websocket_port=internal[4 * i + 3], repository=front.repository)
                         for i in range(replicas)]
        settings = dataclasses.replace(settings or EdgeSettings(),
                                       max_audio_seconds=served_audio_seconds(front.repository))
        upstreams = [Upstream(s.host, s.http_port, s.grpc_port) for s in self.servers]
        self.edge = Edge(front.host, front.http_port, front.grpc_port, upstreams, settings, self._log("nginx"),
                         stream_upstreams=[gateway.url for gateway in self.gateways],
                         socket_upstreams=[gateway.websocket_url for gateway in self.gateways])

    def _log(self, stem: str):
        """A log beside the front's, named `stem`; all on standard output where the front's is."""
        log = self.front.log_path
        return log if log == server_log.STDOUT else log.with_name(stem + log.suffix)

    @property
    def http_url(self) -> str:
        return self.front.http_url

    @property
    def grpc_url(self) -> str:
        return self.front.grpc_url

    def start(self) -> "ReplicaSet":
        self.edge.check_can_start()  # before minutes of model loading
        try:
            for server in self.servers:
                server.launch()
            for server in self.servers:
                server.await_ready()
            for gateway in self.gateways:
                gateway.start()
            self.edge.start()
        except BaseException:
            self.stop()
            raise
        return self

    def check(self) -> str | None:
        """One round of supervision: restart the replicas whose server exited or lost a Python step,
        and the stream gateways that exited. None while the set serves; otherwise why it cannot go
        on (the edge exited, or no replica is left). Call it from the main thread."""
        reason = self.edge.exit_reason()
        if reason:
            return reason
        for number, gateway in enumerate(self.gateways, 1):
            reason = gateway.exit_reason()
            if reason is not None:
                _say(f"{reason}; restarting it")
                gateway.stop()
                try:
                    gateway.start()
                except ServerError as error:
                    _say(f"stream gateway {number} could not be restarted: {error}")
        for number, server in enumerate(self.servers, 1):
            reason = server.failure()
            if reason is None:
                continue
            _say(f"replica {number} ({server.http_url}): {reason}; restarting it "
                 "(the edge sends its requests to the other replicas meanwhile)")
            server.stop()
            try:
                server.start()
                _say(f"replica {number} is ready again")
            except ServerError as error:
                _say(f"replica {number} could not be restarted and is left out: {error}")
        if all(server.process is None for server in self.servers):
            return "no replica is left: every one exited and could not be restarted (see the messages above)"
        return None

    def stop(self) -> None:
        self.edge.stop()
        for process in [*self.gateways, *self.servers]:
            process.stop()

    def close(self) -> None:
        """Stop for good: the edge finishes the requests in flight first, while the gateways and the
        servers still run."""
        self.edge.close()
        for gateway in self.gateways:
            gateway.stop()
        for server in [*self.servers, self.front]:
            server.close()

    def __enter__(self) -> "ReplicaSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)
