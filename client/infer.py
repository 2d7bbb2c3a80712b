"""Classify audio files and directories with the served SER ensemble, from the command line.

    python client/infer.py samples/speech.wav recordings/     # aligned table
    python client/infer.py recordings/ --json > results.jsonl  # one JSON object per line
    find . -name '*.flac' | python client/infer.py -          # a list of files on stdin
    python client/infer.py - < samples/speech.wav             # the audio itself on stdin

Exits 0 when every file was classified; otherwise 1, with one `FILE: reason` line per
failure on stderr (the other files still print their results).
"""

import argparse
import io
import json
import os
import sys

try:
    import soundfile
    from tqdm import tqdm

    from ser_triton.client import access
    from ser_triton.client.library import DEFAULT_URLS, ClientError, SERClient
    from ser_triton.client.table import Table
    from ser_triton.core.audio import find_audio_files
    from ser_triton.core.cli import positive
    from ser_triton.core.contract import CLIENT_WINDOW_SECONDS
except ModuleNotFoundError as missing:  # run as a script from a checkout where nothing is installed
    if __name__ != "__main__":
        raise
    sys.exit(f"client/infer.py: {missing.name} is not installed: run `pip install .` (or `make setup`) "
             "in the repository first")

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="ser-infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR",
                        help="audio files, directories (searched recursively), or - for stdin")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--url", help=f"server host:port (default {DEFAULT_URLS['grpc']} for grpc, "
                                      f"{DEFAULT_URLS['http']} for http); over grpc also a gRPC target such "
                                      "as dns:///ser-triton-headless:8001, whose addresses get the requests "
                                      "in turn (round robin)")
    parser.add_argument("--protocol", choices=sorted(DEFAULT_URLS), default="grpc")
    parser.add_argument("--concurrency", type=positive(int), default=4, help="requests in flight (default 4)")
    parser.add_argument("--timeout", type=positive(float), default=60.0, metavar="SECONDS",
                        help="per request (default 60)")
    parser.add_argument("--window", type=positive(float), default=CLIENT_WINDOW_SECONDS, metavar="SECONDS",
                        help=f"longer audio is sent in segments of at most this (default {CLIENT_WINDOW_SECONDS:g})")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries, with exponential backoff, while the server cannot be reached (default 3)")
    access.add_arguments(parser)
    args = parser.parse_args(argv)
    if "-" in args.paths and len(args.paths) > 1:
        parser.error("- (stdin) must be the only argument")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    return args


def read_stdin(failures: list) -> tuple[list, list[str]]:
    """(sources, names): stdin itself when it holds audio, else the files it lists one per line."""
    data = sys.stdin.buffer.read()
    if not data:
        failures.append("-: stdin is empty: pipe in an audio file or a list of files")
        return [], []
    try:
        soundfile.info(io.BytesIO(data))
        return [data], ["-"]
    except (soundfile.LibsndfileError, RuntimeError):
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        failures.append("-: stdin is neither readable audio nor a list of files")
        return [], []
    files = find_audio_files([line.strip() for line in text.splitlines() if line.strip()], failures)
    return files, files


def describe(error: Exception) -> str:
    """One line, no traceback: our own errors say enough, others get their type."""
    if isinstance(error, (ClientError, ValueError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run(args) -> int:
    failures: list[str] = []
    if args.paths == ["-"]:
        sources, names = read_stdin(failures)
    else:
        sources = find_audio_files(args.paths, failures)
        names = sources
    for line in failures:
        print(line, file=sys.stderr)
    if not sources:
        return 1

    try:
        client = SERClient(args.url, args.protocol, timeout=args.timeout,
                           window_seconds=args.window, retries=args.retries, **access.client_keywords(args))
    except ValueError as error:
        print(f"ser-infer: {error}", file=sys.stderr)
        return 2
    table = None if args.json else Table(names)

    outcomes: dict[int, object] = {}
    shown = 0
    progress = tqdm(total=len(sources), unit="file", file=sys.stderr, disable=None if len(sources) > 1 else True)

    def show(index, outcome):
        """Print finished items in input order, as soon as all earlier ones are printed."""
        nonlocal shown
        outcomes[index] = outcome
        progress.update()
        while shown in outcomes:
            outcome = outcomes.pop(shown)
            if isinstance(outcome, Exception):
                failures.append(names[shown])
                tqdm.write(f"{names[shown]}: {describe(outcome)}", file=sys.stderr)
            else:
                line = json.dumps(outcome.to_json_dict()) if args.json else table.row(outcome)
                tqdm.write(line, file=sys.stdout)
                sys.stdout.flush()
            shown += 1

    with progress:
        client.classify_many(sources, concurrency=args.concurrency, names=names, on_result=show)
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        os._exit(130)  # requests still in flight would otherwise hold the exit until they time out
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the reader left, e.g. `| head`
        return 1


if __name__ == "__main__":
    sys.exit(main())
