"""Classify audio files and directories with the served SER ensemble, from the command line.

    python client/infer.py samples/speech.wav recordings/     # aligned table
    python client/infer.py recordings/ --json > results.jsonl  # one JSON object per line
    find . -name '*.flac' | python client/infer.py -          # a list of files on stdin
    python client/infer.py - < samples/speech.wav             # the audio itself on stdin
    python client/infer.py call.wav --timeline call.png --subtitles call.vtt   # emotion over time

Recordings longer than --window are cut where the speaker pauses (--segmenter speech, the
default over gRPC: the server's speech segmenter, at full speed) or into equal windows
(--segmenter fixed); the recording's label is weighted over its segments, so silence does not vote.

Live audio, event by event (speech_start, interim, utterance), as it arrives:

    python client/infer.py --stream call.wav --realtime          # paced at its real speed, as a call
    arecord -t wav -f S16_LE -r 16000 -c 1 | python client/infer.py --stream -    # a microphone
    ... | python client/infer.py --stream - --raw 8000 --json    # raw 16-bit mono PCM, JSON lines

Exits 0 when every file was classified (or the stream ended cleanly); otherwise 1, with one
`FILE: reason` line per failure on stderr (the other files still print their results); 2 for
a usage error.
"""

import argparse
import io
import json
import os
import sys
from pathlib import Path

try:
    import soundfile
    from tqdm import tqdm

    from ser_triton.client import access
    from ser_triton.client import live_input, timeline
    from ser_triton.client.library import (DEFAULT_URLS, SEGMENTERS, ClientError, SERClient, default_segmenter,
                                           file_chunks)
    from ser_triton.client.table import Table
    from ser_triton.core.audio import AudioError, find_audio_files
    from ser_triton.core.cli import positive
    from ser_triton.core.contract import CLIENT_WINDOW_SECONDS, SAMPLE_RATE
    from ser_triton.core.result import combine
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
    parser.add_argument("--segmenter", choices=SEGMENTERS, help="how recordings longer than --window are cut: "
                        "speech (where the speaker pauses) or fixed (equal windows); default "
                        f"{default_segmenter('grpc')} over grpc, {default_segmenter('http')} over http, as SERClient's")
    parser.add_argument("--timeline", type=Path, metavar="PNG", help="draw the emotions over time (one file; "
                        "needs matplotlib: the evaluate extra)")
    parser.add_argument("--subtitles", type=Path, metavar="VTT", help="write WebVTT cues, one a segment (one file)")
    live = parser.add_argument_group("live audio (--stream)")
    live.add_argument("--stream", action="store_true", help="stream the one FILE (or - for stdin, read as it "
                      "arrives) and print each event as it comes")
    live.add_argument("--realtime", action="store_true", help="pace a file at its real speed, as a live call")
    live.add_argument("--chunk-ms", type=positive(int), default=100, metavar="N", help="chunk size (default 100)")
    live.add_argument("--raw", type=positive(int), metavar="RATE",
                      help="stdin is raw 16-bit little-endian mono PCM at RATE Hz, not WAV")
    access.add_arguments(parser)
    args = parser.parse_args(argv)
    if "-" in args.paths and len(args.paths) > 1:
        parser.error("- (stdin) must be the only argument")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if args.stream and len(args.paths) != 1:
        parser.error("--stream takes one FILE, or - for stdin")
    if args.stream and args.protocol != "grpc":
        parser.error("--stream goes over gRPC: drop --protocol http")
    for flag, given in (("--realtime", args.realtime), ("--raw", args.raw)):
        if given and not args.stream:
            parser.error(f"{flag} is for --stream")
    if args.raw and args.paths != ["-"]:
        parser.error("--raw describes stdin: use it with --stream -")
    if args.segmenter == "speech" and args.protocol != "grpc":
        parser.error("--segmenter speech streams over gRPC: use --segmenter fixed with --protocol http")
    if (args.timeline or args.subtitles) and (len(args.paths) != 1 or Path(args.paths[0]).is_dir()):
        parser.error("--timeline and --subtitles draw one recording: give one FILE")
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


def make_client(args) -> SERClient:
    return SERClient(args.url, args.protocol, timeout=args.timeout, window_seconds=args.window, retries=args.retries,
                     segmenter=args.segmenter, **access.client_keywords(args))


def draw(args, result) -> str | None:
    """--timeline and --subtitles of a result; what went wrong, if anything."""
    try:
        if args.timeline:
            timeline.write_timeline(result, args.timeline)
        if args.subtitles:
            timeline.write_subtitles(result, args.subtitles)
    except (OSError, ValueError) as error:
        return f"cannot write the timeline or subtitles: {error}"
    return None


def event_line(event) -> str:
    """One event as a line of the live table: times in seconds, then the answer where there is one."""
    end = "" if event.end is None else f"{event.end:9.3f}"
    line = f"{event.start:9.3f} {end:>9}  {event.event:<12}"
    if event.label is not None:
        line += f"  {event.label:<7} {event.probabilities[event.label]:.2f}  {event.transcript}"
    return line.rstrip()


def live_chunks(args):
    """(chunks, their sample rate) of the one --stream source."""
    seconds = args.chunk_ms / 1000
    if args.paths != ["-"]:
        return file_chunks(args.paths[0], seconds, args.realtime), SAMPLE_RATE
    stdin = sys.stdin.buffer
    fmt = live_input.WavFormat(args.raw, 1, "<i2") if args.raw else live_input.read_wav_header(stdin)
    return live_input.pcm_chunks(stdin, fmt, seconds), fmt.rate


def stream(args) -> int:
    name = args.paths[0]
    try:
        client = make_client(args)
        chunks, rate = live_chunks(args)
    except (ValueError, AudioError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) and not isinstance(error, AudioError) else 1
    utterances = []
    try:
        with client:
            for event in client.stream(chunks, rate):
                print(json.dumps(event.to_json_dict()) if args.json else event_line(event), flush=True)
                if event.event == "utterance":
                    utterances.append(event.segment())
    except (ClientError, AudioError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    if (args.timeline or args.subtitles) and utterances:
        drawn = draw(args, combine(name, utterances, duration=utterances[-1].end))
        if drawn:
            print(f"{name}: {drawn}", file=sys.stderr)
            return 1
    return 0


def run(args) -> int:
    if args.stream:
        return stream(args)
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
        client = make_client(args)
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
                drawn = draw(args, outcome)
                if drawn:
                    failures.append(names[shown])
                    tqdm.write(f"{names[shown]}: {drawn}", file=sys.stderr)
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
