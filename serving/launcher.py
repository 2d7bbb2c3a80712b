"""`make serve`: the real Triton server that ships in the `nvidia-pytriton` wheel, behind its edge, on loopback.

    python -m ser_triton.serving.launcher --repository model_repository
    python -m ser_triton.serving.launcher --replicas 2     # 2 servers behind the edge, same ports
    python -m ser_triton.serving.launcher --host 0.0.0.0 --client-keys keys.txt --tls-certificate c.pem --tls-key k.pem

Clients reach the servers only through the edge (serving/edge.py: NGINX on the HTTP and gRPC
ports), which passes inference, health and metadata of the ensemble, bounds every request by the
longest audio the export accepts (and each message of a live stream by one chunk, through the
stream gateways), and can require client keys and TLS; the servers listen on loopback ports of
their own, load no model at run time, and close their control plane (model loading, logging,
trace, shared memory) to every request (serving.admin; --admin-key-file opens it to one key,
which every local user can then read in the process list). Everything it starts creates its files
for its own user alone (umask 077), and a server whose Python step dies is restarted. It waits
until every model is ready and says so; a missing export, a port in use, or a model that
fails to load ends it with one clear message and a non-zero exit instead of a hang. Ctrl-C,
SIGTERM or SIGHUP stops it cleanly; killed hard (SIGKILL), it takes its servers with it. At start
it removes the shared memory that servers killed with their stubs left in /dev/shm. The work is
serving.replicas.ReplicaSet: servers (serving.supervisor.TritonServer) behind the edge (serving.edge).
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from ser_triton.core.contract import ENSEMBLE
from ser_triton.serving import admin, isolation
from ser_triton.serving.edge import EdgeSettings
from ser_triton.serving.replicas import ReplicaSet
from ser_triton.serving.server_log import STDOUT, name
from ser_triton.serving.supervisor import ServerError, TritonServer, remove_orphaned_shared_memory

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop everything, as Ctrl-C does."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def ready_message(service: ReplicaSet) -> str:
    replicas = service.servers
    settings = service.edge.settings
    served = "1 server" if len(replicas) == 1 else f"{len(replicas)} replicas"
    access = ", ".join(filter(None, ["TLS" if settings.tls else "",
                                     "client keys required" if settings.client_keys else "no client key"]))
    page = f"{'https' if settings.tls else 'http'}://{service.http_url}/"
    return (f"ready: ensemble '{ENSEMBLE}' on {served} behind the edge ({access}): HTTP {service.http_url}, "
            f"gRPC {service.grpc_url}; in a browser: {page}; metrics: {', '.join(r.metrics_url for r in replicas)} "
            f"(logs: {', '.join(sorted({name(r.log_path) for r in replicas}))}; "
            f"nginx: {name(service.edge.log_path)}). Ctrl-C stops it.")


def parse_arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.serving.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default=TritonServer.host, help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=TritonServer.http_port)
    parser.add_argument("--grpc-port", type=int, default=TritonServer.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=TritonServer.metrics_port,
                        help="with --replicas N: replica i's metrics are on this port + i - 1")
    parser.add_argument("--replicas", type=int, default=1,
                        help="tritonserver replicas behind the edge on the HTTP and gRPC ports (default 1)")
    parser.add_argument("--client-keys", type=Path, metavar="FILE",
                        help="clients must send one of these keys (one a line) as Authorization: Bearer KEY")
    parser.add_argument("--tls-certificate", type=Path, metavar="FILE", help="the edge serves TLS with this "
                        "certificate (PEM, chain first) and --tls-key")
    parser.add_argument("--tls-key", type=Path, metavar="FILE")
    parser.add_argument("--admin-key-file", type=Path, metavar="FILE",
                        help="open the servers' control plane (model loading, logging, trace, shared memory) to "
                             f"requests with this key in the header {admin.ADMIN_HEADER}. WARNING: "
                             f"{admin.KEY_VISIBLE.replace('%', '%%')}")
    parser.add_argument("--timeout", type=float, default=TritonServer.startup_timeout,
                        help="seconds to wait for readiness")
    parser.add_argument("--log-file", type=Path, default=Path("build/tritonserver.log"),
                        help="the server's log; - for standard output (containers)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="one more tritonserver flag, as --server-arg=--grpc-max-connection-age=300000 "
                             "(repeat for several)")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be 1 or more, not {args.replicas}")
    return args


def main(argv=None) -> int:
    # A launcher that a script put in the background starts with SIGINT ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = parse_arguments(argv)
    os.umask(isolation.UMASK)  # logs, configs and work folders: for this user alone
    log_file = args.log_file
    if log_file != STDOUT:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_file.resolve()
    try:
        admin_key = admin.key_from(args.admin_key_file)
        server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                              args.timeout, log_file, args.server_arg, admin_key=admin_key)
        settings = EdgeSettings(client_keys=args.client_keys, tls_certificate=args.tls_certificate,
                                tls_key=args.tls_key)
        service = ReplicaSet(server, args.replicas, settings)
    except (ServerError, admin.AdminKeyError) as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 1
    if admin_key is not None:
        admin.warn_key_visible("make serve")
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    leftovers = remove_orphaned_shared_memory()
    if leftovers:
        print(f"make serve: removed {len(leftovers)} shared-memory files that killed servers left in /dev/shm",
              file=sys.stderr)
    try:
        service.start()
    except ServerError as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 1
    except Stopped:  # asked to stop (docker stop, kubectl delete): a clean stop
        _stop(service)
        return 0
    except KeyboardInterrupt:
        _stop(service)
        return 130
    print(ready_message(service), flush=True)
    reason = None
    try:
        while reason is None:
            time.sleep(0.5)
            reason = service.check()
    except (KeyboardInterrupt, Stopped):
        pass
    _stop(service)
    if reason:
        print(f"make serve: {reason}", file=sys.stderr)
        return 1
    return 0


def _stop(service) -> None:
    """Stop everything, not to be cut short by a second Ctrl-C or SIGTERM."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    service.close()


if __name__ == "__main__":
    sys.exit(main())
