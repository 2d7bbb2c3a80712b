"""`make demo`: export, serve, classify the shipped speech sample, stop. One command, end to end.

The pretrained models are the default. Where no model hub can be reached, the demo says so and
goes on with the tiny preset (small random networks, offline), whose emotions are meaningless;
`make demo PRESET=tiny` skips the download attempt.
"""

import argparse
import os
import sys
from pathlib import Path

from client import infer
from export.errors import ExportError, ModelUnavailable
from export.pipeline import ExportOptions, export
from model.errors import SourceError
from model.sources import PRESETS
from serving.supervisor import ServerError, TritonServer

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "speech.wav"


def run_export(preset: str, checkpoint: str | None, repository: Path) -> str:
    try:
        export(ExportOptions(out=repository, preset=preset, checkpoint=checkpoint))
        return preset
    except ModelUnavailable as error:
        if preset != "pretrained" or not isinstance(error.__cause__, SourceError):
            raise
        print(f"\ndemo: the pretrained models could not be downloaded ({error.__cause__.__cause__ or error}).\n"
              "demo: going on with PRESET=tiny: small random networks, offline; their emotions are "
              "meaningless. Run `make demo PRESET=tiny` to skip the download attempt.\n", file=sys.stderr)
        export(ExportOptions(out=repository, preset="tiny"))
        return "tiny"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="pretrained")
    parser.add_argument("--checkpoint")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--audio", type=Path, default=SAMPLE, help="file to classify (default: the shipped sample)")
    args = parser.parse_args(argv)
    try:
        preset = run_export(args.preset, args.checkpoint, args.repository)
    except ExportError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    server = TritonServer(args.repository, args.host, args.http_port, args.grpc_port, args.metrics_port)
    try:
        with server:
            print(f"demo: tritonserver ready on gRPC {server.grpc_url} ({preset} preset); classifying {args.audio}",
                  flush=True)
            code = infer.main([os.path.relpath(args.audio), "--url", server.grpc_url])
    except ServerError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print("demo: server stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
