"""`python -m ser_triton.bench --streaming-only`: the streaming stage of --streaming-variants alone
(their perf_analyzer throughput included, for the capacity), stored into the summary.json in
--out with this run's machine and date; the rest of that summary stays as it was.
"""

import json
import sys
from datetime import datetime, timezone

from tqdm import tqdm

from ser_triton.bench import report
from ser_triton.bench.exports import ensure_export
from ser_triton.bench.variants import best_audio_seconds_per_s, measure_streaming, server_on, throughput
from ser_triton.bench.workload import load_or_make
from ser_triton.serving import perf_analyzer


def with_streaming(summary: dict) -> dict:
    """The summary with its streaming section where a whole run puts it: before the headline's
    keys that bench.analysis appends (so that recomputing the headline gives the file back)."""
    if "streaming" in summary or "speedup_vs_best_pytorch" not in summary:
        return summary | {"streaming": summary.get("streaming", {})}
    items = list(summary.items())
    at = [key for key, _ in items].index("speedup_vs_best_pytorch")
    return dict(items[:at] + [("streaming", {})] + items[at:])


def run(args) -> int:
    """Measure and store (see the module's docstring); the exit code."""
    path = args.out / "summary.json"
    if not path.is_file():
        raise SystemExit(f"bench: --streaming-only stores into {path}, which is not there: run the bench first")
    summary = with_streaming(json.loads(path.read_text()))
    progress = tqdm(total=len(args.streaming_variants), desc="streaming", file=sys.stderr, disable=args.no_progress)
    workload = load_or_make(args.utterances, args.seed, args.work / "workload")
    analyzer = perf_analyzer.install(args.tools)
    for variant in args.streaming_variants:
        export = ensure_export(variant, args, workload, progress)
        load_before = report.load_average()
        directory = args.work / "runs" / f"{variant}-{args.preset}-streaming"
        with server_on(export["repository"], directory) as server:
            best = best_audio_seconds_per_s(throughput(server, analyzer, workload, args, directory))
            live = measure_streaming(server, export["repository"], workload, best, args, directory)
        live |= {"throughput_audio_seconds_per_s": best, "preset": args.preset,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": report.machine(),
                 "load_average": {"before": load_before, "after": report.load_average()},
                 "measured_apart": "with --streaming-only: this entry's run, machine and date are its own"}
        summary["streaming"][variant] = live
        progress.update()
    progress.close()
    paths = report.write(summary, args.out)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
