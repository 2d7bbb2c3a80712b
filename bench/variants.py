"""One served variant measured whole: the bundled tritonserver started on its export, perf_analyzer at
each concurrency, the client library end to end, the streaming stage where asked, the server's
memory; the summary's entry for it and its answers (for its drift from fp32).
"""

import time
from contextlib import contextmanager
from pathlib import Path

from ser_triton.bench import served, streaming_socket
from ser_triton.bench.exports import deployment_of, export_summary, precision_summary
from ser_triton.evaluation.systems import prediction_record


@contextmanager
def server_on(repository: Path, directory: Path):
    """The bundled tritonserver serving `repository` on free loopback ports, its log in `directory`."""
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.supervisor import TritonServer

    directory.mkdir(parents=True, exist_ok=True)
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                      startup_timeout=900, log_path=directory / "tritonserver.log") as server:
        yield server


def throughput(server, analyzer, workload, args, directory: Path) -> dict:
    """perf_analyzer's figures per concurrency, after a warm-up (bench/served.py)."""
    from ser_triton.client.library import SERClient

    served.warm_up(SERClient(server.grpc_url), workload)
    return served.measure_perf_analyzer(server, analyzer, workload, args.concurrency,
                                        args.rounds * len(workload.utterances), directory,
                                        progress=not args.no_progress)


def measure_streaming(server, repository: Path, workload, throughput: float, args, directory: Path) -> dict:
    """The streaming stage (bench.streaming) over gRPC and, beside it, over a WebSocket of a stream
    gateway started beside the server (bench.streaming_socket)."""
    with streaming_socket.socket_beside(server, repository, directory / "stream_gateway.log") as socket_url:
        return streaming_socket.measure_both(server.grpc_url, socket_url, workload, throughput, args.stream_seconds,
                                             args.most_streams)


def best_audio_seconds_per_s(levels: dict) -> float:
    return max(level["audio_seconds_per_s"] for level in levels.values())


def run_variant(variant: str, export: dict, workload, analyzer, args) -> tuple[dict, list]:
    """(the summary's systems entry for `variant`, its answers as prediction records)."""
    directory = args.work / "runs" / f"{variant}-{args.preset}"
    started = time.perf_counter()
    with server_on(export["repository"], directory) as server:
        ready_seconds = time.perf_counter() - started
        levels = throughput(server, analyzer, workload, args, directory)
        client, answers = served.measure_client(server, workload, args.client_concurrency,
                                                progress=not args.no_progress)
        live = None
        if variant in args.streaming_variants:
            live = measure_streaming(server, export["repository"], workload, best_audio_seconds_per_s(levels), args,
                                     directory)
        memory = served.server_memory(server)
    return {
        "description": f"`ser` ensemble ({variant}) on tritonserver 2.51.0 (Python backend + ONNX Runtime), "
                       "perf_analyzer over gRPC; client = client.library.SERClient.classify_many over gRPC",
        "deployment": deployment_of(export["repository"]),
        "server_ready_seconds": round(ready_seconds, 1),
        "concurrency": levels,
        "client": client,
        "server_memory": memory,
        **({"streaming": live} if live else {}),
        "export": export_summary(export),
        **({"precision": chosen} if (chosen := precision_summary(export)) else {}),
    }, [prediction_record(result) for result in answers]
