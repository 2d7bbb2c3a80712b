"""Loopback ports: is one taken, and a free one (for the replicas' internal ports, tests and benchmarks)."""

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
_handed_out: set[int] = set()  # a port given here is not given again by this process


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (and to bind(port 0))."""
    try:
        low, high = map(int, EPHEMERAL_RANGE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, chosen outside the ephemeral range. One the kernel picked (bind to port 0) lies
    inside it, where any outgoing connection (a client's, the edge's to a replica) may take it between the moment
    it was chosen and the moment its server binds it: a busy test run saw exactly that ("port already in use")."""
    low, high = ephemeral_range()
    candidates = range(max(1024, low // 3), low) if low > 2048 else range(high + 1, 65536)
    for _ in range(1000):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as probe:  # no SO_REUSEADDR: a port that still has connections is not free either
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port on {host} in {candidates.start}-{candidates.stop - 1} (outside the ephemeral range)")


class Addresses:
    """host:port of a server's HTTP and gRPC endpoints, from its host, http_port and grpc_port."""

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"
