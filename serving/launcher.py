"""`make serve`: the real Triton server that ships in the `nvidia-pytriton` wheel, on loopback.

    python -m serving.launcher --repository model_repository
    python -m serving.launcher --replicas 2     # 2 servers behind an NGINX load balancer, same ports

It waits until every model is ready and says so; a missing export, a port in use, or a model that
fails to load ends it with one clear message and a non-zero exit instead of a hang. Ctrl-C,
SIGTERM or SIGHUP stops it cleanly; killed hard (SIGKILL), it takes its servers with it. At start
it removes the shared memory that servers killed with their stubs left in /dev/shm. The work is
serving.supervisor.TritonServer (one server) and serving.replicas.ReplicaSet (several).
"""

import argparse
import signal
import sys
import time
from pathlib import Path

from client.contract import ENSEMBLE
from serving.replicas import ReplicaSet
from serving.server_log import STDOUT, name
from serving.supervisor import ServerError, TritonServer, remove_orphaned_shared_memory

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop everything, as Ctrl-C does."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def ready_message(service) -> str:
    if isinstance(service, TritonServer):
        return (f"ready: ensemble '{ENSEMBLE}' on HTTP {service.http_url}, gRPC {service.grpc_url}, "
                f"metrics {service.metrics_url} (log: {name(service.log_path)}). Ctrl-C stops it.")
    replicas = service.servers
    return (f"ready: ensemble '{ENSEMBLE}' on {len(replicas)} replicas behind nginx: HTTP {service.http_url}, "
            f"gRPC {service.grpc_url}; each replica's metrics: {', '.join(r.metrics_url for r in replicas)} "
            f"(logs: {', '.join(sorted({name(r.log_path) for r in replicas}))}; "
            f"nginx: {name(service.balancer.log_path)}). Ctrl-C stops it.")


def parse_arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default=TritonServer.host, help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=TritonServer.http_port)
    parser.add_argument("--grpc-port", type=int, default=TritonServer.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=TritonServer.metrics_port,
                        help="with --replicas N: replica i's metrics are on this port + i - 1")
    parser.add_argument("--replicas", type=int, default=1,
                        help="tritonserver replicas behind an NGINX load balancer on the HTTP and gRPC ports "
                             "(default 1: one server on them, no balancer)")
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
    log_file = args.log_file
    if log_file != STDOUT:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_file.resolve()
    server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                          args.timeout, log_file, args.server_arg)
    try:
        service = server if args.replicas == 1 else ReplicaSet(server, args.replicas)
    except ServerError as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 1
    supervise = service.exit_reason if service is server else service.check
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
            reason = supervise()
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
