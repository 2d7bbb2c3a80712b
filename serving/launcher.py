"""`make serve`: the real Triton server that ships in the `nvidia-pytriton` wheel, on loopback.

    python -m serving.launcher --repository model_repository

It waits until every model is ready and says so; a missing export, a port in use, or a model that
fails to load ends it with one clear message and a non-zero exit instead of a hang. Ctrl-C or
SIGTERM stops it cleanly. The work is serving.supervisor.TritonServer.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

from client.contract import ENSEMBLE
from serving.supervisor import ServerError, TritonServer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default=TritonServer.host, help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=TritonServer.http_port)
    parser.add_argument("--grpc-port", type=int, default=TritonServer.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=TritonServer.metrics_port)
    parser.add_argument("--timeout", type=float, default=TritonServer.startup_timeout,
                        help="seconds to wait for readiness")
    parser.add_argument("--log-file", type=Path, default=Path("build/tritonserver.log"))
    args = parser.parse_args(argv)
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
                          args.timeout, args.log_file.resolve())
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        server.start()
    except ServerError as error:
        print(f"make serve: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.stop()
        return 130
    print(f"ready: ensemble '{ENSEMBLE}' on HTTP {server.http_url}, gRPC {server.grpc_url}, "
          f"metrics {server.metrics_url} (log: {server.log_path}). Ctrl-C stops it.", flush=True)
    try:
        while not stop and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    code = server.process.returncode if server.process.poll() is not None else 0
    server.stop()
    if code:
        print(f"make serve: tritonserver stopped with code {code}; log: {server.log_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
