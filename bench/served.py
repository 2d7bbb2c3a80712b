"""The subject: the `ser` ensemble on the bundled Triton server, measured from outside.

perf_analyzer drives it at each concurrency with the workload's utterances (gRPC); the client
library (SERClient.classify_many) drives it end to end from the wav files. The server's peak
resident memory is read from /proc (VmHWM of tritonserver and of each Python stub it started)
and set against the networks' weights on disk.
"""

import sys
import time
from pathlib import Path

from tqdm import tqdm

from ser_triton.bench import perf
from ser_triton.bench.stats import rates
from ser_triton.core.contract import ENSEMBLE, SAMPLE_RATE


def server_memory(server) -> dict:
    """Peak RSS of tritonserver and its stub children (one per Python model instance), and the
    networks' weights on disk (each network's ONNX file with its weights file).

    The total adds each process's own peak, so it bounds the true simultaneous peak from above
    (peaks at model load and under load need not coincide; shared pages count in each).
    """
    from ser_triton.core import specs
    from ser_triton.export.network_files import size
    from ser_triton.export.repository import network_file

    processes = server.memory()
    peak = sum(p["peak_rss_mib"] for p in processes.values())
    weights = {name: round(size(network_file(server.repository, name)) / 2**20, 2) for name in specs.ONNX_NETWORKS}
    return {
        "total_peak_rss_mib": peak,
        "total_rss_mib_at_end": sum(p["rss_mib"] for p in processes.values()),
        "weights_mib": weights,
        "peak_over_weights": round(peak / sum(weights.values()), 2),
        "processes": processes,
    }


def warm_up(client, workload, count: int = 3) -> None:
    """A few requests of different lengths, so first-call costs stay out of the measurement."""
    by_length = sorted(workload.utterances, key=lambda u: u.seconds)
    picks = [by_length[0], by_length[len(by_length) // 2], by_length[-1]][:count]
    for utterance in picks:
        client.classify(utterance.path)


def measure_perf_analyzer(server, analyzer, workload, concurrencies, requests_per_level, directory: Path,
                          progress: bool = True) -> dict:
    """perf_analyzer at each concurrency, whole rounds of the workload per level; throughput and
    latency from its per-request profile export (the real audio length of every request)."""
    results = {}
    levels = tqdm(concurrencies, desc="perf_analyzer", unit="level", file=sys.stderr, disable=not progress,
                  leave=False)
    for concurrency in levels:
        levels.set_postfix_str(f"concurrency {concurrency}")
        count = _round_up(max(requests_per_level, 2 * concurrency), len(workload.utterances))
        row = perf.run(analyzer, ENSEMBLE, server.grpc_url, workload.perf_input, concurrency, count,
                       directory / f"perf_c{concurrency}.csv")
        latencies = [latency for latency, _ in row["requests"]]
        seconds = [samples / SAMPLE_RATE for _, samples in row["requests"]]
        results[str(concurrency)] = rates(latencies, seconds, row["wall_seconds"]) | {
            "server_queue_ms": round(row.get("Server Queue", 0.0) / 1000.0, 1),
            "server_compute_ms": round(sum(row.get(k, 0.0) for k in ("Server Compute Input", "Server Compute Infer",
                                                                      "Server Compute Output")) / 1000.0, 1),
            "mean_batch_per_model": row.get("mean_batch", {}),
        }
    return results


def _round_up(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


def measure_client(server, workload, concurrencies, progress: bool = True, protocol: str = "grpc") -> tuple[dict, list]:
    """The client library end to end: files in, Results out, `concurrency` requests in flight.
    Returns the figures per concurrency and the answers (Results, in workload order) of the last."""
    from ser_triton.client.library import SERClient

    results = {}
    seconds = {str(u.path): u.seconds for u in workload.utterances}
    for concurrency in concurrencies:
        paths = [str(u.path) for u in workload.utterances]
        bar = tqdm(total=len(paths), desc=f"client c={concurrency}", unit="utt", file=sys.stderr,
                   disable=not progress, leave=False)
        client = SERClient(server.grpc_url if protocol == "grpc" else server.http_url, protocol=protocol)
        began = time.perf_counter()
        outcomes = client.classify_many(paths, concurrency=concurrency, on_result=lambda *_: bar.update(1))
        wall = time.perf_counter() - began
        bar.close()
        failures = [o for o in outcomes if isinstance(o, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(paths)} client requests failed; first: {failures[0]!r}")
        results[str(concurrency)] = rates([o.latency for o in outcomes], [seconds[o.file] for o in outcomes], wall)
    return results, outcomes


