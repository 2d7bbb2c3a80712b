"""How accurate is the served model on labelled speech: WA/UA, F1, confusion matrix, WER/CER.

    python client/evaluate.py data/test.csv                       # manifest: path,label[,text,speaker,session,channel]
    python client/evaluate.py IEMOCAP_full_release --sessions 5   # the release folder, 4-class setup
    python client/evaluate.py data/test.csv --compare 127.0.0.1:9001          # a second server, side by side
    python client/evaluate.py data/test.csv --reference --checkpoint checkpoints/x.pt   # vs PyTorch

Writes summary.json, summary.md, confusion.png, predictions.jsonl and skipped.jsonl into --out
(default evaluation_results/<data name>/) and prints summary.md. Rows that cannot be used (malformed,
unknown label, missing or unreadable audio) are skipped, each with its reason on stderr and in
skipped.jsonl, and counted; the exit code is 0 when the evaluation was written.
Needs the evaluate extra (pip install 'ser-triton[evaluate]'); --reference also the export extra.
"""

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ser_triton.client import access

from ser_triton.evaluation import systems
from ser_triton.core.cli import positive
from ser_triton.core.channels import MODES as CHANNEL_MODES
from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import DataError, Skipped, load_dataset, parse_label_map
from ser_triton.client.library import DEFAULT_URLS, SERClient

EXTRA_HINT = "pip install 'ser-triton[evaluate]'"

def build_parser(reference: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ser-evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA", help="a manifest (.csv, .tsv, .jsonl) or an IEMOCAP release folder")
    parser.add_argument("--out", type=Path, help="output folder (default evaluation_results/<data name>/)")
    parser.add_argument("--sessions", nargs="+", metavar="N",
                        help="only these sessions (IEMOCAP: 1-5, e.g. --sessions 5 for its test fold; "
                             "manifests: values of the session column)")
    parser.add_argument("--excited", choices=("happy", "drop"), default="happy",
                        help="IEMOCAP's exc: merged into happy (default, the research setup) or left out")
    parser.add_argument("--map", action="append", metavar="LABEL=TARGET",
                        help="what the data's other labels mean: a served label or drop (left out, counted); "
                             "repeatable, e.g. --map excited=happy --map calm,fearful=drop")
    parser.add_argument("--limit", type=positive(int), metavar="N", help="only the first N usable utterances")
    served = parser.add_argument_group("served system")
    served.add_argument("--url", help=f"server host:port (default {DEFAULT_URLS['grpc']} for grpc, "
                                      f"{DEFAULT_URLS['http']} for http)")
    served.add_argument("--protocol", choices=sorted(DEFAULT_URLS), default="grpc")
    served.add_argument("--compare", metavar="URL", help="a second server to evaluate on the same utterances")
    served.add_argument("--compare-protocol", choices=sorted(DEFAULT_URLS), help="its protocol (default --protocol)")
    served.add_argument("--concurrency", type=positive(int), default=4, help="requests in flight (default 4)")
    served.add_argument("--timeout", type=positive(float), default=120.0, metavar="SECONDS",
                        help="per request (default 120)")
    served.add_argument("--retries", type=int, default=3, help="retries while a server cannot be reached (default 3)")
    served.add_argument("--channels", choices=CHANNEL_MODES, default="mix",
                        help="how a row's channels are heard where the manifest names no channel for it: mix "
                             "(default: a labelled row is one speaker's utterance) or split (each channel a speaker, "
                             "the row's label weighted over both); a row's channel column picks that channel alone")
    access.add_arguments(served)
    parser.add_argument("--reference", action="store_true",
                        help="also run the PyTorch research pipeline (export extra) and compare; it takes the "
                             "model flags of python -m ser_triton.model.reference (see ser-evaluate --reference --help)")
    parser.add_argument("--bootstrap", type=positive(int), default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% intervals (default 1000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0, metavar="SEED", help="bootstrap seed (default 0)")
    if reference:
        systems.add_reference_arguments(parser)
    return parser


def parse_args(argv):
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--reference", action="store_true")
    reference = first.parse_known_args(argv)[0].reference
    try:
        parser = build_parser(reference)
    except systems.SystemUnavailable as error:
        print(f"ser-evaluate: {error}", file=sys.stderr)
        sys.exit(2)
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    if args.compare_protocol and not args.compare:
        parser.error("--compare-protocol needs --compare URL")
    return args


def report_skipped(skipped: list[Skipped]) -> None:
    """A line per problem row on stderr; rows left out by the data set's setup, a line per reason."""
    for row in skipped:
        if not row.by_design:
            tqdm.write(row.line(), file=sys.stderr)
    left_out = Counter(row.reason for row in skipped if row.by_design)
    for reason, count in left_out.items():
        tqdm.write(f"skipped {count} {'row' if count == 1 else 'rows'}: {reason}", file=sys.stderr)


def make_clients(args) -> list[tuple[str, SERClient]]:
    """(name, client) of each served system: the server at --url, and the one at --compare."""
    keywords = {"timeout": args.timeout, "retries": args.retries, "channels": args.channels,
                **access.client_keywords(args)}
    clients = [("served", SERClient(args.url, args.protocol, **keywords))]
    if args.compare:
        clients.append(("compare", SERClient(args.compare, args.compare_protocol or args.protocol, **keywords)))
    return clients


def run_systems(args, clients, utterances):
    """Every requested system on the utterances; each later one only on those all earlier ones classified.

    Returns (runs, utterances kept, skipped): runs[i].outcomes line up with the kept utterances.
    """
    runs, skipped = [], []
    for name, client in clients:
        with client:
            runs.append(systems.run_served(name, client, utterances, args.concurrency))
        utterances, skipped = _keep_classified(runs, utterances, skipped)
    if args.reference and utterances:
        runs.append(systems.run_reference(args, utterances))
        utterances, skipped = _keep_classified(runs, utterances, skipped)
    return runs, utterances, skipped


def _keep_classified(runs, utterances, skipped):
    """Drop the utterances the newest run failed on from every run; each failure becomes a Skipped row."""
    newest = runs[-1]
    keep = [i for i, outcome in enumerate(newest.outcomes) if not isinstance(outcome, Exception)]
    for i, outcome in enumerate(newest.outcomes):
        if isinstance(outcome, Exception):
            skipped.append(Skipped(utterances[i].id, *systems.failure_reason(outcome, newest.name)))
    for run in runs:
        run.outcomes = [run.outcomes[i] for i in keep]
    return [utterances[i] for i in keep], skipped


def evaluate(args) -> int:
    from ser_triton.evaluation import report as evaluation_report
    from ser_triton.evaluation import metrics  # needs the evaluate extra (jiwer), checked by main

    try:
        dataset = load_dataset(args.data, args.sessions, args.excited, parse_label_map(args.map))
    except DataError as error:
        print(error, file=sys.stderr)
        return 2
    utterances = dataset.utterances[:args.limit] if args.limit else dataset.utterances
    report_skipped(dataset.skipped)
    if not utterances:
        reasons = "; ".join(f"{count} {reason}" for reason, count in dataset.skipped_reasons().items())
        print(f"{args.data}: no usable utterance to evaluate ({reasons or 'it has no rows'})", file=sys.stderr)
        return 1
    try:
        clients = make_clients(args)
    except ValueError as error:
        print(f"--url/--compare: {error}", file=sys.stderr)
        return 2
    try:
        runs, utterances, failed = run_systems(args, clients, utterances)
    except systems.SystemUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    report_skipped(failed)
    dataset.skipped += failed
    if not utterances:
        print(f"{args.data}: every utterance failed; see the lines above", file=sys.stderr)
        return 1

    records = {run.name: [systems.prediction_record(r, u) for u, r in zip(utterances, run.outcomes)] for run in runs}
    served, *others = runs
    summary = {
        "data": {"name": dataset.name, "kind": dataset.kind, "source": str(dataset.source),
                 "sessions": args.sessions, "limit": args.limit},
        "labels": list(LABELS),
        "system": served.description,
        **metrics.score_records(records[served.name], args.bootstrap, args.bootstrap_seed),
        "n_skipped": len(dataset.skipped),
        "skipped": dataset.skipped_reasons(),
        "throughput": served.throughput,
        "bootstrap": {"resamples": args.bootstrap, "seed": args.bootstrap_seed, "confidence": metrics.CONFIDENCE},
        "comparisons": {
            run.name: {
                "system": run.description,
                **metrics.score_records(records[run.name], args.bootstrap, args.bootstrap_seed),
                "throughput": run.throughput,
                "agreement": metrics.compare_systems(records[served.name], records[run.name],
                                                     args.bootstrap, args.bootstrap_seed),
            }
            for run in others
        },
    }
    out = args.out or Path("evaluation_results") / dataset.name
    paths = evaluation_report.write(summary, records, dataset.skipped, out)
    print(paths["summary.md"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import jiwer  # noqa: F401  the evaluate extra
        import matplotlib  # noqa: F401
    except ImportError as error:
        print(f"ser-evaluate needs {error.name}, which is in its extra: {EXTRA_HINT}", file=sys.stderr)
        return 2
    try:
        return evaluate(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        os._exit(130)  # requests still in flight would otherwise hold the exit until they time out


if __name__ == "__main__":
    sys.exit(main())
