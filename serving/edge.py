"""The edge: NGINX in front of the Triton servers, and the only way clients reach them.

`make serve` puts it in front of one server or of N replicas (serving.replicas), on the usual
ports, while the servers listen on loopback ports of their own; the Kubernetes edge runs the same
config (`python -m ser_triton.serving.edge`, deploy/kubernetes/edge). From serving/edge.conf.template:
- only health, read-only metadata (model configs and statistics too: perf_analyzer reads them)
  and inference of the served models pass (HTTP paths, gRPC methods); the model-repository,
  logging, trace and shared-memory APIs are refused here (and the servers refuse them too, to
  every request: serving.admin);
- a request body is bounded before it is buffered: the longest audio the deployment accepts
  (the ensemble's own limit, read from the exported repository) as float32 samples, plus
  headroom for headers; a larger one gets 413 (RESOURCE_EXHAUSTED over gRPC) at once;
- optional client keys (`Authorization: Bearer KEY`, from a file of keys: a Kubernetes Secret)
  and TLS (a certificate and key: a Kubernetes TLS Secret);
- HTTP through `proxy_pass`, gRPC (HTTP/2) through `grpc_pass`, each to a live replica, retried
  on the next one when a replica fails; live streams (ModelStreamInfer) through the stream
  gateways (serving.stream_gateway), which bound each message of a stream to one chunk;
- live streams over a WebSocket (/v1/stream, with Upgrade) through the stream gateways too, one
  chosen per connection; a client key may come as a subprotocol there (serving.stream_socket);
- the page at / (serving/web: the page, ser-stream.js, its worklet and style, the messages'
  schema), static files copied into its work folder, under a Content-Security-Policy that allows
  nothing but them and a socket to this edge;
- the client's key and any admin key are dropped before a request goes on.
NGINX runs in the foreground as a child of this process (and dies with it), with every file it
writes in its own work folder; it comes from the system's packages (`make setup` installs the
Debian package `nginx` where it is missing and it can).
"""

import argparse
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ser_triton.client.access import socket_key_protocol
from ser_triton.core.contract import (ENSEMBLE, GRPC_PORT, HTTP_PORT, MAX_SECONDS, MAX_STREAM_SECONDS, SAMPLE_RATE,
                                      STREAM, STREAM_SOCKET_KEY_PREFIX, STREAM_SOCKET_PATH, STREAM_SOCKET_SUBPROTOCOL)
from ser_triton.serving import admin, isolation, lifetime, processes, server_log
from ser_triton.serving.ports import Addresses
from ser_triton.serving.supervisor import ServerError, check_ports_free, wait_until_ready

TEMPLATE = Path(__file__).with_name("edge.conf.template")
WEB = resources.files("ser_triton.serving") / "web"
"""The page the edge serves at / and its files (package data), copied into the edge's work folder."""
PAGE = "index.html"

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}
"""The page's headers: its own files and a socket to this edge only (no inline script or style, no
other site, no frames), the microphone for this page alone."""

NAME = "nginx (the edge)"

DRAIN_SECONDS = 20
"""How long a stopping edge (SIGTERM to the launcher: docker stop, Kubernetes) may go on finishing
the requests it accepted: nginx's worker_shutdown_timeout (edge.conf.template). With the server's
own stop after it (Triton's exit timeout, 30 s) it fits a container's stop timeout of 60 s, and the
server pods' terminationGracePeriodSeconds (90, after their 15 s preStop sleep)."""

KEEPALIVE_SECONDS = 5
"""The edge retires a kept-alive connection to a server after its request once it is this old
(nginx's upstream keepalive_time, edge.conf.template), so that a server leaving the rotation (a
Kubernetes pod in its preStop sleep) gets no new request over an old connection."""

FAIL_TIMEOUT = 10.0
"""Seconds a replica stays out of the rotation after a failed request; then one request tries it again."""

HEADROOM_BYTES = 64 * 1024
"""What a request may carry besides its samples: the HTTP binary-tensor header's JSON, protobuf
framing, other inputs and parameters."""

BYTES_PER_SAMPLE = 4
"""float32: the ensemble's AUDIO dtype, as the binary-tensor HTTP extension and gRPC carry it."""

_CLIENT_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")


class EdgeError(ServerError):
    """The edge cannot be configured as asked; the message says why and what to do."""


def max_request_bytes(max_audio_seconds: float) -> int:
    """The largest request body the edge takes: one request of the longest audio, plus headroom."""
    return int(max_audio_seconds * SAMPLE_RATE) * BYTES_PER_SAMPLE + HEADROOM_BYTES


STREAM_OVERHEAD_BYTES_PER_SECOND = 50 * 256
"""What a stream carries besides its samples: up to 256 bytes of framing per chunk, 50 chunks
(20 ms each) a second."""


def max_stream_bytes(max_stream_seconds: float) -> int:
    """The largest body of one live stream: its longest audio, its chunks' framing, headroom."""
    return round(max_stream_seconds * (SAMPLE_RATE * BYTES_PER_SAMPLE + STREAM_OVERHEAD_BYTES_PER_SECOND)) \
        + HEADROOM_BYTES


def served_audio_seconds(repository: Path) -> float:
    """The longest audio the exported ensemble accepts (its audio step's limit), so the edge's
    bound and the ensemble's refusal come from the same value."""
    from ser_triton.core.model_config import CONFIG_FILE, read_config
    from ser_triton.core.specs import AUDIO_INPUT
    from ser_triton.serving.steps.parameters import MAX_AUDIO_SECONDS

    config_path = Path(repository) / AUDIO_INPUT / CONFIG_FILE
    try:
        return float(read_config(config_path).parameters[MAX_AUDIO_SECONDS].string_value)
    except (OSError, ValueError) as error:
        raise ServerError(f"cannot read the ensemble's audio limit from {config_path} ({error}): "
                          "re-export the repository with `make export`") from None


def read_client_keys(path: Path) -> list[str]:
    """The client keys in `path`: one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise EdgeError(f"cannot read the client keys file {path}: {error.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise EdgeError(f"the client keys file {path} holds no key: put one key a line")
    for number, key in enumerate(keys, 1):
        if not _CLIENT_KEY.fullmatch(key):
            raise EdgeError(f"key {number} in {path} must be 16 to 256 letters, digits or ._~+/=- "
                            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


@dataclass(frozen=True)
class EdgeSettings:
    """What a deployment sets on its edge; the defaults are `make serve`'s."""
    max_audio_seconds: float = MAX_SECONDS
    max_stream_seconds: float = MAX_STREAM_SECONDS
    models: tuple[str, ...] = (ENSEMBLE, STREAM)
    """The models clients may call (inference, metadata, readiness); every other one is refused."""
    client_keys: Path | None = None
    """A file of client keys, one a line; None: no key needed (loopback, or a trusted network)."""
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    fail_timeout: float = FAIL_TIMEOUT

    def __post_init__(self):
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise EdgeError("TLS needs both a certificate and its key (--tls-certificate and --tls-key)")
        for path in (self.tls_certificate, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise EdgeError(f"the TLS file {path} does not exist")
        if not self.max_audio_seconds > 0:
            raise EdgeError(f"the longest audio must be above 0 s, not {self.max_audio_seconds}")

    @property
    def max_body_bytes(self) -> int:
        return max_request_bytes(self.max_audio_seconds)

    @property
    def max_stream_body_bytes(self) -> int:
        return max_stream_bytes(self.max_stream_seconds)

    @property
    def tls(self) -> bool:
        return self.tls_certificate is not None


@dataclass(frozen=True)
class Upstream:
    """One Triton server behind the edge."""
    host: str
    http_port: int
    grpc_port: int


class _Template(string.Template):
    delimiter = "@"  # nginx uses $ for its own variables


def copy_page(work: Path) -> Path:
    """The page's files (WEB) in `work`/web, readable by nginx's workers (nobody, under root)."""
    folder = Path(work) / "web"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for item in WEB.iterdir():
        if item.is_file():
            copy = folder / item.name
            copy.write_bytes(item.read_bytes())
            copy.chmod(0o644)
    return folder


def _private_map(path: Path, entries) -> Path:
    """A map file (mode 0600: keys) for the config to include."""
    path.touch(mode=0o600)
    path.write_text("".join(f'"{entry}" 1;\n' for entry in entries))
    return path


def _client_key_maps(settings: EdgeSettings, work: Path) -> str:
    """$ser_client_key_ok (Authorization: Bearer KEY) and $ser_socket_key_ok (the key as a WebSocket
    subprotocol), 1 where the request may pass; the keys go into files of mode 0600, which the config
    includes: the config itself holds no secret."""
    if settings.client_keys is None:
        return ("    map $http_authorization $ser_client_key_ok {\n        default 1;\n    }\n"
                "    map $http_sec_websocket_protocol $ser_socket_key_ok {\n        default 1;\n    }")
    keys = read_client_keys(settings.client_keys)
    bearer = _private_map(Path(work) / "client-keys.map", (f"Bearer {key}" for key in keys))
    offered = _private_map(Path(work) / "socket-keys.map", (socket_key_protocol(key) for key in keys))
    prefix = re.escape(STREAM_SOCKET_KEY_PREFIX).replace("\\.", "[.]")
    return (f"    map $http_authorization $ser_client_key_ok {{\n"
            f"        default 0;\n        include {bearer};\n    }}\n"
            f"    map $http_sec_websocket_protocol $ser_socket_key {{\n"
            f'        "~(^|[ ,])(?<ser_offered_key>{prefix}[A-Za-z0-9_-]+)([ ,]|$)" $ser_offered_key;\n'
            f'        default "";\n    }}\n'
            f"    map $ser_socket_key $ser_socket_key_ok {{\n        default 0;\n        include {offered};\n    }}")


def render(settings: EdgeSettings, upstreams: list[Upstream], *, host: str, http_port: int, grpc_port: int,
           work: Path, error_log: str, stream_upstreams: list[str] = (), socket_upstreams: list[str] = ()) -> str:
    """The edge's nginx.conf. Live streams go to `stream_upstreams` (the stream gateways' host:port),
    or where there are none, straight to the servers' gRPC ports (bounded per stream only); WebSockets
    to `socket_upstreams` (the gateways' WebSocket host:port), or where there are none, to the
    upstreams' HTTP ports (each an edge of its own, as on Kubernetes). The page is copied into
    `work`/web; with client keys, the keys go into files there that only this user reads."""
    health = f"max_fails=1 fail_timeout={settings.fail_timeout:g}s"

    def servers(addresses) -> str:
        return "\n".join(f"        server {address} {health};" for address in addresses)

    client_keys, web = _client_key_maps(settings, work), copy_page(work)
    offered = re.escape(STREAM_SOCKET_SUBPROTOCOL).replace("\\.", "[.]")
    tls_settings = ""
    if settings.tls:
        tls_settings = (f"        ssl_certificate {Path(settings.tls_certificate).resolve()};\n"
                        f"        ssl_certificate_key {Path(settings.tls_key).resolve()};\n"
                        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                        "        ssl_session_cache shared:ser_tls:1m;")
    audio = f"{settings.max_audio_seconds:g} s"
    return _Template(TEMPLATE.read_text()).substitute(
        work=work, error_log=error_log, host=host, http_port=http_port, grpc_port=grpc_port,
        http_servers=servers(f"{u.host}:{u.http_port}" for u in upstreams),
        grpc_servers=servers(f"{u.host}:{u.grpc_port}" for u in upstreams),
        stream_servers=servers(stream_upstreams or [f"{u.host}:{u.grpc_port}" for u in upstreams]),
        socket_servers=servers(socket_upstreams or [f"{u.host}:{u.http_port}" for u in upstreams]),
        socket_path=STREAM_SOCKET_PATH, socket_protocol=STREAM_SOCKET_SUBPROTOCOL,
        socket_protocol_offered=f'"~(^|[ ,]){offered}([ ,]|$)"', web=web, page=PAGE,
        page_files="|".join(re.escape(path.name) for path in sorted(web.iterdir()) if path.name != PAGE),
        page_headers="\n".join(f'            add_header {name} "{value}" always;'
                                for name, value in PAGE_HEADERS.items()),
        models="|".join(re.escape(model) for model in settings.models),
        max_body=settings.max_body_bytes, max_stream_body=settings.max_stream_body_bytes, client_keys=client_keys,
        tls_listen=" ssl" if settings.tls else "", tls_settings=tls_settings, admin_header=admin.ADMIN_HEADER,
        too_large=(f"request body over {settings.max_body_bytes} bytes: this server takes audio of at most {audio} "
                   f"a request (float32 at {SAMPLE_RATE} Hz, binary); split longer recordings (the client does)"),
        unauthenticated="this server needs a valid client key: send the header Authorization: Bearer KEY "
                        "(--api-key, or the environment variable SER_API_KEY)",
        unauthenticated_socket="this server needs a valid client key: offer it as the WebSocket subprotocol "
                               f"{STREAM_SOCKET_KEY_PREFIX}BASE64URL_OF_THE_KEY beside {STREAM_SOCKET_SUBPROTOCOL} "
                               "(ser-stream.js does), or send the header Authorization: Bearer KEY",
        plain_to_tls="this server speaks TLS only: connect with TLS (--tls)",
        refused=(f"not served here: clients may call health, metadata and inference of "
                 f"{', '.join(settings.models)}; the model-repository, logging, trace and shared-memory APIs "
                 "are closed"))


def nginx_environment() -> dict[str, str]:
    """All nginx needs of the launcher's environment (PATH, TZ): nothing else of it (a client key in
    $SER_API_KEY, a token) is in its processes, whose workers run as another user under root."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "TZ")}


def nginx_binary() -> Path:
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise ServerError("nginx is not installed; the server's edge needs it: run `make setup` as root (it installs "
                          "the Debian package), or `apt-get install nginx`")
    return Path(found)


class Edge(Addresses):
    """NGINX on `host` (its HTTP and gRPC ports), in front of `upstreams`."""

    def __init__(self, host: str, http_port: int, grpc_port: int, upstreams: list[Upstream],
                 settings: EdgeSettings = EdgeSettings(), log_path: Path | None = None, startup_timeout: float = 30.0,
                 stream_upstreams: list[str] = (), socket_upstreams: list[str] = ()):
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.upstreams, self.settings, self.startup_timeout = upstreams, settings, startup_timeout
        self.stream_upstreams, self.socket_upstreams = list(stream_upstreams), list(socket_upstreams)
        self._work = tempfile.TemporaryDirectory(prefix="ser-edge-")
        os.chmod(self._work.name, 0o755)  # nginx's workers run as nobody when it is started as root
        self.log_path = Path(log_path or Path(self._work.name) / "error.log")
        self.config_path = Path(self._work.name) / "nginx.conf"
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        return render(self.settings, self.upstreams, host=self.host, http_port=self.http_port,
                      grpc_port=self.grpc_port, work=Path(self._work.name), error_log=self._error_log(),
                      stream_upstreams=self.stream_upstreams, socket_upstreams=self.socket_upstreams)

    def _error_log(self) -> str:
        """Where nginx writes its log: the log file, or stderr where the launcher's output is the log."""
        return "stderr" if self.log_path == server_log.STDOUT else str(self.log_path.resolve())

    def check_can_start(self) -> None:
        """ServerError or EdgeError now, before the servers spend minutes loading their models."""
        binary = nginx_binary()
        check_ports_free(self.host, {"HTTP": self.http_port, "gRPC": self.grpc_port})
        self.config_path.write_text(self.config())
        check = subprocess.run([str(binary), "-t", "-q", "-p", self._work.name, "-c", str(self.config_path),
                                "-e", "stderr"], capture_output=True, text=True)
        if check.returncode != 0:
            raise EdgeError(f"nginx refuses the edge's config ({self.config_path}): {check.stderr.strip()}")

    def start(self) -> "Edge":
        self.check_can_start()
        log = None if self.log_path == server_log.STDOUT else isolation.private_file(self.log_path, append=True)
        self.process = subprocess.Popen(
            [str(nginx_binary()), "-p", self._work.name, "-c", str(self.config_path), "-e", self._error_log()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=nginx_environment(),
            preexec_fn=lifetime.ends_with_parent())
        if log is not None:
            log.close()
        try:  # ready through the edge: nginx listens and reaches a server
            wait_until_ready(NAME, self.process, self.http_url, self.startup_timeout, self.log_path,
                             tls=self.settings.tls)
        except BaseException:
            self.stop()
            raise
        return self

    def exit_reason(self) -> str | None:
        """None while nginx runs; once it has exited, what to tell the user."""
        if self.process is None or self.process.poll() is None:
            return None
        ended = processes.how_it_ended(self.process.returncode)
        return f"{NAME} {ended}; log: {server_log.name(self.log_path)}"

    def stop(self, timeout: float = 10.0, drain: bool = False) -> None:
        """Fast shutdown (SIGTERM: the master stops its worker), then anything left in its group.
        `drain`: first a graceful one (SIGQUIT: nginx closes its listening sockets at once and finishes
        the requests in flight, for at most DRAIN_SECONDS), so that stopping fails no request it had
        accepted; the servers behind it must still be up meanwhile."""
        if self.process is not None:
            if drain and self.process.poll() is None:
                self.process.send_signal(signal.SIGQUIT)
                try:
                    self.process.wait(DRAIN_SECONDS + timeout)
                except subprocess.TimeoutExpired:
                    pass
            processes.terminate(self.process, timeout)
        self.process = None

    def close(self) -> None:
        """Stop for good: the requests in flight are finished first (drain)."""
        self.stop(drain=True)
        self._work.cleanup()


def _upstream(text: str) -> Upstream:
    host, _, ports = text.rpartition("@")
    http_port, _, grpc_port = ports.partition(",")
    try:
        return Upstream(host, int(http_port), int(grpc_port))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give an upstream as HOST@HTTP_PORT,GRPC_PORT "
                                         f"(like ser-triton@8000,8001), not {text!r}") from None


def parse_arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ser_triton.serving.edge", description="Run the edge (nginx, in the foreground) in front of Triton "
        "servers: the Kubernetes edge's entrypoint. SIGTERM drains it (the requests in flight finish). "
        "`make serve` starts the same edge by itself.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all: a container)")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    parser.add_argument("--upstream", type=_upstream, action="append", required=True, metavar="HOST@HTTP,GRPC",
                        help="a Triton server (or a Service in front of several): ser-triton@8000,8001; repeat for more")
    parser.add_argument("--stream-upstream", action="append", default=[], metavar="HOST:PORT",
                        help="a stream gateway (serving.stream_gateway) for live streams; repeat for more "
                             "(default: streams go straight to the upstreams, bounded per stream only)")
    parser.add_argument("--socket-upstream", action="append", default=[], metavar="HOST:PORT",
                        help=f"a stream gateway's WebSocket for {STREAM_SOCKET_PATH}; repeat for more (default: the "
                             "upstreams' HTTP ports, each an edge in front of its gateways, as the server pods run)")
    parser.add_argument("--max-audio-seconds", type=float, default=MAX_SECONDS,
                        help=f"the longest audio a request may carry: the export's --max-audio-seconds "
                             f"(default {MAX_SECONDS:g})")
    parser.add_argument("--max-stream-seconds", type=float, default=MAX_STREAM_SECONDS,
                        help=f"the longest live stream (default {MAX_STREAM_SECONDS:g})")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help=f"a model clients may call (default {ENSEMBLE} and {STREAM}); repeat for more")
    parser.add_argument("--client-keys", type=Path, metavar="FILE", help="require one of these keys (one a line)")
    parser.add_argument("--tls-certificate", type=Path, metavar="FILE")
    parser.add_argument("--tls-key", type=Path, metavar="FILE")
    parser.add_argument("--print-config", action="store_true", help="print the nginx config and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        settings = EdgeSettings(args.max_audio_seconds, args.max_stream_seconds,
                                tuple(args.models or (ENSEMBLE, STREAM)), args.client_keys, args.tls_certificate,
                                args.tls_key)
        work = Path(tempfile.mkdtemp(prefix="ser-edge-"))
        config = render(settings, args.upstream, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                        work=work, error_log="stderr", stream_upstreams=args.stream_upstream,
                        socket_upstreams=args.socket_upstream)
        if args.print_config:
            print(config, end="")
            return 0
        binary = nginx_binary()
    except ServerError as error:
        print(f"serving.edge: {error}", file=sys.stderr)
        return 2
    (work / "nginx.conf").write_text(config)
    return run_draining([str(binary), "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "stderr"])


def run_draining(command: list[str]) -> int:
    """nginx in the foreground, stopped as the launcher stops its edge: SIGTERM (the kubelet, docker
    stop) or SIGINT drains it (nginx's graceful stop, SIGQUIT: no new connection, the requests in
    flight finished for at most DRAIN_SECONDS) where nginx itself would stop at once. Its exit status."""
    nginx = subprocess.Popen(command, start_new_session=True, preexec_fn=lifetime.ends_with_parent())
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: nginx.send_signal(signal.SIGQUIT))
    returncode = nginx.wait()
    return returncode if returncode >= 0 else 128 - returncode


if __name__ == "__main__":
    sys.exit(main())
