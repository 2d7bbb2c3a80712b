"""What the hardening costs and what it leaves, measured on the tiny export: bench/results/hardening.json.

    python -m ser_triton.bench.hardening                       # exports the tiny preset into a temporary folder
    python -m ser_triton.bench.hardening --repository model_repository --out /tmp/hardening.json

- restart: without model control, a server whose Python step died is restarted whole (serving.replicas)
  where an admin key once let one model be reloaded: seconds from the step's death to a ready
  server, beside one model's unload and load on a server opened with an admin key;
- stream gateway: the delay it adds to each message of a stream, message by message (send one,
  wait for its echo), through the gateway process and straight to the same echoing gRPC server,
  for a 20 ms chunk and for the longest (10 s) chunk;
- the residual at a server's own port: one stream message of OVERSIZE_MIB sent to a server's
  gRPC port directly (where nothing bounds it) and through the gateway, with the peak resident
  memory of tritonserver and each Python stub above where it was.
"""

import argparse
import json
import os
import queue
import signal
import statistics
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient

from ser_triton.bench.report import load_average, machine
from ser_triton.core.contract import CHUNK, CHUNK_RATE, MAX_CHUNK_SECONDS, SAMPLE_RATE, STREAM
from ser_triton.serving import processes
from ser_triton.serving.ports import free_port
from ser_triton.serving.replicas import ReplicaSet
from ser_triton.serving.stream_gateway import METHOD, SERVICE, StreamGateway
from ser_triton.serving.supervisor import TritonServer

RESULTS = Path(__file__).resolve().parent / "results" / "hardening.json"
OVERSIZE_MIB = 300
ECHO_MESSAGES = 2000
RESTARTS = 3


def _server(repository: Path, work: Path, name: str, **options) -> TritonServer:
    return TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                        log_path=work / f"{name}.log", **options)


def restart_seconds(repository: Path, work: Path) -> dict:
    """Seconds from a Python step's death to its server ready again, restarted whole (each of RESTARTS)."""
    seconds = []
    with ReplicaSet(_server(repository, work, "restart"), replicas=1) as service:
        [server] = service.servers
        for _ in range(RESTARTS):
            stub = next(pid for pid, model in server.stubs().items() if model == "asr")
            os.kill(stub, signal.SIGKILL)
            died = time.monotonic()
            while server.failure() is None:
                time.sleep(0.05)
            if service.check() is not None or not server.ready():
                raise RuntimeError("the server did not come back")
            seconds.append(time.monotonic() - died)
    return {"seconds": [round(s, 2) for s in seconds], "median_s": round(statistics.median(seconds), 2)}


def reload_seconds(repository: Path, work: Path) -> dict:
    """Seconds to unload and load one model (asr) on a server whose control plane an admin key opened."""
    import urllib.request

    from ser_triton.serving import admin

    key = admin.new_key()
    seconds = []
    with _server(repository, work, "reload", admin_key=key) as server:
        for _ in range(RESTARTS):
            began = time.monotonic()
            for action in ("unload", "load"):
                request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/asr/{action}",
                                                 data=b"{}", method="POST", headers=admin.headers(key))
                urllib.request.urlopen(request, timeout=300).close()
            seconds.append(time.monotonic() - began)
    return {"seconds": [round(s, 2) for s in seconds], "median_s": round(statistics.median(seconds), 2)}


def _echo_server() -> tuple[grpc.Server, str]:
    """A gRPC server whose ModelStreamInfer sends every message straight back (raw bytes)."""
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.stream_stream_rpc_method_handler(lambda requests, context: (r for r in requests))})
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler], options=[
        ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def round_trips_us(url: str, size: int, count: int) -> list[float]:
    """Microseconds from sending each of `count` messages of `size` bytes to its echo, one at a time."""
    outgoing: queue.Queue = queue.Queue()
    message = bytes(size)
    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1),
                                             ("grpc.max_receive_message_length", -1)]) as channel:
        answers = channel.stream_stream(f"/{SERVICE}/{METHOD}")(iter(outgoing.get, None))
        times = []
        for _ in range(count):
            began = time.perf_counter()
            outgoing.put(message)
            next(answers)
            times.append((time.perf_counter() - began) * 1e6)
        outgoing.put(None)
        for _ in answers:
            pass
    return times[count // 10:]  # past the connection's warm-up


def gateway_delay(work: Path) -> dict:
    echo, url = _echo_server()
    gateway = StreamGateway("127.0.0.1", free_port(), [url], work / "stream_gateway.log").start()
    found = {}
    try:
        for name, seconds in (("20 ms chunk", 0.02), ("10 s chunk", MAX_CHUNK_SECONDS)):
            size = int(seconds * SAMPLE_RATE) * 4 + 200
            direct, through = [], []
            for _ in range(2):  # interleaved, so that a busy moment of the machine weighs on both
                direct += round_trips_us(url, size, ECHO_MESSAGES // 2)
                through += round_trips_us(gateway.url, size, ECHO_MESSAGES // 2)
            found[name] = {"message_bytes": size,
                           "direct_us": {"p50": round(np.percentile(direct, 50)),
                                         "p90": round(np.percentile(direct, 90))},
                           "gateway_us": {"p50": round(np.percentile(through, 50)),
                                          "p90": round(np.percentile(through, 90))},
                           "added_p50_us": round(np.percentile(through, 50) - np.percentile(direct, 50))}
    finally:
        gateway.stop()
        echo.stop(0)
    return found


def one_oversize_message(url: str) -> str:
    errors, done = [], threading.Event()
    samples = OVERSIZE_MIB * 2**20 // 4
    with grpcclient.InferenceServerClient(url, channel_args=[("grpc.max_send_message_length", -1)]) as client:
        client.start_stream(lambda result=None, error=None: (errors.append(error), done.set()))
        chunk = grpcclient.InferInput(CHUNK, [1, samples], "FP32")
        chunk.set_data_from_numpy(np.zeros((1, samples), np.float32))
        rate = grpcclient.InferInput(CHUNK_RATE, [1, 1], "INT32")
        rate.set_data_from_numpy(np.array([[SAMPLE_RATE]], np.int32))
        client.async_stream_infer(STREAM, [chunk, rate], request_id="0", sequence_id=7, sequence_start=True)
        done.wait(300)
        client.stop_stream(cancel_requests=True)
    return str(errors[0]) if errors else "answered"


def oversize_residual(repository: Path, work: Path) -> dict:
    found = {}
    with _server(repository, work, "residual") as server:
        gateway = StreamGateway("127.0.0.1", free_port(), [server.grpc_url], work / "residual_gateway.log").start()
        try:
            for where, url in (("through the stream gateway", gateway.url),
                               ("at the server's own port", server.grpc_url)):
                family = {server.process.pid: "tritonserver", gateway.process.pid: "stream gateway",
                          **{pid: f"stub:{model}" for pid, model in server.stubs().items()}}
                before = {pid: processes.memory_mib(pid)["rss_mib"] for pid in family}
                for pid in family:
                    processes.reset_peak(pid)
                began = time.monotonic()
                answer = one_oversize_message(url)
                growth = {family[pid]: processes.memory_mib(pid)["peak_rss_mib"] - before[pid] for pid in family}
                found[where] = {"answer": answer[:200], "seconds": round(time.monotonic() - began, 1),
                                "peak_growth_mib": growth, "total_peak_growth_mib": sum(growth.values())}
        finally:
            gateway.stop()
    return {"message_mib": OVERSIZE_MIB, **found}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench.hardening", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path,
                        help="an exported repository (default: the tiny preset, exported now)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ser-hardening-") as folder:
        work = Path(folder)
        repository = args.repository
        if repository is None:
            from ser_triton.export.pipeline import ExportOptions, export

            repository = work / "model_repository"
            export(ExportOptions(out=repository, preset="tiny"))
        results = {"machine": machine(), "load_average_at_start": load_average(),
                   "repository": "tiny preset" if args.repository is None else str(repository),
                   "restart_after_a_step_died": restart_seconds(repository, work),
                   "reload_of_one_model_with_an_admin_key": reload_seconds(repository, work),
                   "stream_gateway_delay_per_message": gateway_delay(work),
                   "oversize_stream_message": oversize_residual(repository, work),
                   "load_average_at_end": load_average()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
