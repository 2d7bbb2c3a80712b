"""The stream gateway: live streams' way in, beside every server, with each message bounded to one chunk.

Triton 2.51 reads each message of a gRPC stream whole, however large (it has no flag for a receive
limit), before the stream model can refuse a chunk over MAX_CHUNK_SECONDS, and NGINX does not read
gRPC's framing. So the edge routes the one method that streams, ModelStreamInfer, here: a gRPC
server whose receive limit is what one chunk's request may be (`max_message_bytes`, from the
contract), so that a larger message is refused (RESOURCE_EXHAUSTED) before it is read; every other
message passes through as it is (raw bytes: nothing parsed, nothing rebuilt) to the servers' gRPC
ports on loopback, and every response comes back the same way. The client's deadline and its
going away reach the server (which then frees the stream), and the server's status reaches the
client. Metadata passes too, less any credential or control-plane header (`DROPPED_METADATA`).
With several servers, each stream goes to one live server (gRPC round_robin), so a server that is
restarting costs no new stream.

The same process, in the same event loop, serves live streams over a WebSocket (`--websocket-listen`:
serving.stream_socket, which the edge proxies as /v1/stream), each a stream to the same servers; its
bounds follow the streaming model's own limits, read from the exported repository (`--repository`).

    python -m ser_triton.serving.stream_gateway --listen 127.0.0.1:9001 --upstream 127.0.0.1:8101 \
        --websocket-listen 127.0.0.1:9002 --repository model_repository

`make serve` runs one beside each server (serving.replicas).
"""

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from ser_triton.core.contract import MAX_CHUNK_SECONDS, STREAM_SOCKET_PATH
from ser_triton.serving import admin, isolation, lifetime, processes, server_log, stream_socket
from ser_triton.serving.edge import max_request_bytes
from ser_triton.serving.ports import port_in_use
from ser_triton.serving.supervisor import ServerError

SERVICE = "inference.GRPCInferenceService"
METHOD = "ModelStreamInfer"

NAME = "the stream gateway"

DROPPED_METADATA = ("authorization", admin.ADMIN_HEADER.lower(), "triton-grpc-protocol-")
"""Metadata keys (and, ending in -, prefixes) that never reach a server: client keys, admin keys and
any header of Triton's restricted protocols."""

MAX_STREAMS = 256
"""Streams one gateway carries at once; more are refused (RESOURCE_EXHAUSTED). Each server holds
at most 64 (the stream model's own limit)."""


def max_message_bytes() -> int:
    """The largest message of a stream: one request carrying the longest chunk, plus headroom."""
    return max_request_bytes(MAX_CHUNK_SECONDS)


def forwarded(metadata) -> list[tuple[str, object]]:
    """The client's metadata a server may see: not gRPC's own, no credential, no control-plane header."""
    return [(key, value) for key, value in metadata or ()
            if not key.startswith((":", "grpc-")) and key not in ("user-agent", "te", "content-type")
            and not any(key == d or (d.endswith("-") and key.startswith(d)) for d in DROPPED_METADATA)]


class Gateway:
    """The gateway's gRPC server: one method, passed through to `upstreams` (host:port each)."""

    def __init__(self, upstreams: list[str], max_message: int | None = None,
                 socket_bounds: stream_socket.Bounds = stream_socket.BOUNDS, rules: dict | None = None):
        """`socket_bounds`, `rules`: the WebSocket's bounds and the servers' segmentation rules
        (stream_socket.served_limits of the repository)."""
        self.upstreams, self.max_message = upstreams, max_message or max_message_bytes()
        self.socket_bounds, self.rules = socket_bounds, rules
        self.channel = self.upstream = None  # made in serve(), on its event loop

    def _connect(self) -> None:
        self.channel = grpc.aio.insecure_channel("ipv4:" + ",".join(self.upstreams), options=[
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", self.max_message),
            ("grpc.max_receive_message_length", -1),
            # a restarted server is back in the rotation within a second or two
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)])
        self.upstream = self.channel.stream_stream(f"/{SERVICE}/{METHOD}")  # no (de)serializers: raw bytes

    async def model_stream_infer(self, requests, context):
        call = self.upstream(requests, timeout=context.time_remaining(),
                             metadata=forwarded(context.invocation_metadata()))
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED or not context.cancelled():
                await context.abort(error.code(), error.details() or "")
        finally:
            call.cancel()  # the client went away (or its message was refused): the server frees the stream

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.stream_stream_rpc_method_handler(self.model_stream_infer)})

    async def serve(self, listen: str, stop: asyncio.Event, started: asyncio.Event | None = None,
                    websocket_listen: str | None = None) -> None:
        """Serve on `listen` (host:port), and WebSockets on `websocket_listen` where given, until `stop`
        is set; `started` is set once it listens."""
        self._connect()
        server = grpc.aio.server(handlers=[self.handler()], maximum_concurrent_rpcs=MAX_STREAMS, options=[
            ("grpc.max_receive_message_length", self.max_message), ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0)])
        if server.add_insecure_port(listen) == 0:
            raise ServerError(f"{NAME} cannot listen on {listen}")
        sockets = None
        if websocket_listen:
            host, _, port = websocket_listen.rpartition(":")
            bridge = stream_socket.Bridge(self.channel, self.socket_bounds, self.rules)
            try:
                sockets = await bridge.serve(host, int(port))
            except OSError as error:
                raise ServerError(f"{NAME} cannot listen on {websocket_listen}: {error.strerror}") from None
        await server.start()
        if started is not None:
            started.set()
        await stop.wait()
        if sockets is not None:  # open sockets are told the server is going away (1001)
            sockets.close()
            await sockets.wait_closed()
        await server.stop(grace=5)
        await self.channel.close()


async def _serve_until_signalled(gateway: Gateway, listen: str, websocket_listen: str | None) -> None:
    stop = asyncio.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop_signal, stop.set)
    await gateway.serve(listen, stop, websocket_listen=websocket_listen)


class StreamGateway:
    """One gateway as a child process of the launcher (serving.replicas), like the servers and the edge."""

    def __init__(self, host: str, port: int, upstreams: list[str], log_path: Path, startup_timeout: float = 30.0,
                 websocket_port: int | None = None, repository: Path | None = None):
        """`websocket_port`: serve /v1/stream there too (on `host`), bounded by the streaming model's limits
        in `repository` (the defaults where it is None)."""
        self.host, self.port, self.upstreams = host, port, upstreams
        self.websocket_port, self.repository = websocket_port, repository
        self.log_path, self.startup_timeout = Path(log_path), startup_timeout
        self.process: subprocess.Popen | None = None
        self._launches = 0

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def websocket_url(self) -> str | None:
        """host:port of its WebSocket (None where it serves none)."""
        return None if self.websocket_port is None else f"{self.host}:{self.websocket_port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", __name__, "--listen", self.url,
                *(f"--upstream={upstream}" for upstream in self.upstreams),
                *([f"--websocket-listen={self.websocket_url}"] if self.websocket_port else []),
                *([f"--repository={self.repository}"] if self.repository else [])]

    def start(self) -> "StreamGateway":
        """Start it and wait until it listens; call this from the main thread (it dies with this process)."""
        ports = [port for port in (self.port, self.websocket_port) if port]
        for port in ports:
            if port_in_use(self.host, port):
                raise ServerError(f"{NAME}'s port {port} on {self.host} is already in use")
        log = None if self.log_path == server_log.STDOUT else isolation.private_file(self.log_path, self._launches > 0)
        self._launches += 1
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=isolation.confined(lifetime.ends_with_parent()))
        if log is not None:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while not all(port_in_use(self.host, port) for port in ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                reason = self.exit_reason() or f"{NAME} did not listen within {self.startup_timeout:g} s"
                self.stop()
                raise ServerError(server_log.failure_reason(reason, self.log_path))
            time.sleep(0.05)
        return self

    def exit_reason(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        return f"{NAME} {processes.how_it_ended(self.process.returncode)}; log: {server_log.name(self.log_path)}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            processes.terminate(self.process, timeout)
        self.process = None


def parse_arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where the edge reaches it")
    parser.add_argument("--upstream", action="append", required=True, metavar="HOST:PORT",
                        help="a server's gRPC address; repeat for several (each stream goes to one live server)")
    parser.add_argument("--max-message-bytes", type=int, default=max_message_bytes(),
                        help="the largest message a stream may send (default: one request of the longest chunk, "
                             f"{MAX_CHUNK_SECONDS:g} s)")
    parser.add_argument("--websocket-listen", metavar="HOST:PORT",
                        help=f"serve live streams over a WebSocket here too ({STREAM_SOCKET_PATH}, where the edge "
                             "sends it)")
    parser.add_argument("--repository", type=Path, help="the exported repository the servers serve: the WebSocket "
                        "takes its streaming model's limits (streams at once, idle time, segmentation rules)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        bounds, rules = stream_socket.served_limits(args.repository)
        gateway = Gateway(args.upstream, args.max_message_bytes, bounds, rules)
        asyncio.run(_serve_until_signalled(gateway, args.listen, args.websocket_listen))
    except ServerError as error:
        print(f"serving.stream_gateway: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
