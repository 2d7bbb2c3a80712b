"""`make demo`, its second half: serve an exported repository, classify one recording, stop.

    python -m ser_triton.serving.demo --repository model_repository     # the shipped sample

`make demo` first exports (`python -m ser_triton.export --fallback-preset tiny`: the pretrained
models, or the tiny preset where no model hub answers), then runs this: the server as
`make serve` runs it (behind its edge, on loopback), the client library on the sample, one table
row, and a clean stop.
"""

import argparse
import sys
from pathlib import Path

from ser_triton import samples
from ser_triton.client.library import ClientError, SERClient
from ser_triton.client.table import Table
from ser_triton.core.audio import AudioError
from ser_triton.core.contract import GRPC_PORT, HTTP_PORT, METRICS_PORT
from ser_triton.serving.replicas import ReplicaSet
from ser_triton.serving.supervisor import ServerError, TritonServer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.serving.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--grpc-port", type=int, default=GRPC_PORT)
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT)
    parser.add_argument("--audio", type=Path, default=samples.speech(), help="file to classify (default: the shipped sample)")
    args = parser.parse_args(argv)
    try:
        with ReplicaSet(TritonServer(args.repository, args.host, args.http_port, args.grpc_port,
                                     args.metrics_port)) as service:
            print(f"demo: tritonserver ready behind its edge on gRPC {service.grpc_url}; classifying {args.audio}",
                  flush=True)
            with SERClient(service.grpc_url) as client:
                result = client.classify(args.audio, name=args.audio.name)
            print(Table([result.file]).row(result))
    except (ServerError, ClientError, AudioError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print("demo: server stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
