"""The streaming stage through the WebSocket (/v1/stream), beside gRPC, in the same run.

The same conversations, paced in real time in the same 100 ms chunks (bench.streaming), go to the
same server once over gRPC (ModelStreamInfer) and once over a WebSocket of a stream gateway
(serving.stream_socket: live mode, f32le at 16 kHz, so the server hears the same samples); the
delays and the streams sustained are measured alike for each, and the WebSocket's extra delay is
its p90 minus gRPC's at each number of streams measured both ways (`websocket_extra_delay_p90_s`).
Under `make bench` the server stands alone, so a stream gateway is started beside it for the
WebSocket (`socket_beside`); `python -m ser_triton.bench.streaming --socket-url ws://HOST:PORT/v1/stream`
measures a running `make serve` through its edge, where both ways pass a gateway.
"""

import asyncio
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import websockets

from ser_triton.bench import streaming
from ser_triton.core.contract import SAMPLE_RATE, STREAM_SOCKET_PATH, STREAM_SOCKET_SUBPROTOCOL


async def _socket_stream(url: str, audio: np.ndarray, out: dict) -> None:
    utterances, began = [], time.monotonic()
    async with websockets.connect(url, subprotocols=[STREAM_SOCKET_SUBPROTOCOL], max_size=None) as socket:
        await socket.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "f32le",
                                      "channels": 1, "mode": "live"}))

        async def send():  # paced as the gRPC streams are (its waits in a thread: the events go on meanwhile)
            chunks = streaming.paced(audio, began)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await socket.send(np.asarray(chunk, "<f4").tobytes())
            await socket.send(json.dumps({"type": "end"}))

        sending = asyncio.ensure_future(send())
        async for text in socket:
            event = json.loads(text)
            if event["event"] == "utterance":
                utterances.append((event["start_sample"], event["end_sample"], time.monotonic() - began))
            elif event["event"] == "error":
                raise RuntimeError(f"{event['code']}: {event['message']}")
        await sending
    out["utterances"], out["finished_after_s"] = utterances, time.monotonic() - began - audio.size / SAMPLE_RATE


def socket_stream(url: str, audio: np.ndarray, out: dict) -> None:
    """bench.streaming.one_stream over the WebSocket at `url` (ws://HOST:PORT/v1/stream)."""
    try:
        asyncio.run(_socket_stream(url, audio, out))
    except (OSError, RuntimeError, websockets.WebSocketException) as error:
        out["error"] = str(error)


def extra_delay_p90(grpc: dict, socket: dict) -> dict:
    """streams -> the WebSocket's p90 delay minus gRPC's, at each number of streams measured both ways."""
    over_grpc = {level["streams"]: level["p90"] for level in grpc["levels"] if level["p90"] is not None}
    return {str(level["streams"]): round(level["p90"] - over_grpc[level["streams"]], 3)
            for level in socket["levels"] if level["p90"] is not None and level["streams"] in over_grpc}


def measure_both(grpc_url: str, socket_url: str, workload, throughput_audio_s_per_s: float | None,
                 seconds: float = 60.0, most: int = 16) -> dict:
    """bench.streaming.measure over gRPC, with the same over the WebSocket beside it (`websocket`) and
    the WebSocket's extra delay at p90 (`websocket_extra_delay_p90_s`); one utterance's compute, the
    floor of both, is measured over gRPC."""
    live = streaming.measure(grpc_url, workload, throughput_audio_s_per_s, seconds, most)
    through = streaming.measure(grpc_url, workload, throughput_audio_s_per_s, seconds, most,
                                stream=lambda _, audio, out: socket_stream(socket_url, audio, out))
    through["description"] = f"the same over the WebSocket {STREAM_SOCKET_PATH} (live, f32le at 16 kHz)"
    return live | {"websocket": through, "websocket_extra_delay_p90_s": extra_delay_p90(live, through)}


@contextmanager
def socket_beside(server, repository: Path, log: Path):
    """A stream gateway beside a server that stands alone (make bench's): its WebSocket's URL."""
    from ser_triton.serving.ports import free_port
    from ser_triton.serving.stream_gateway import StreamGateway

    gateway = StreamGateway(server.host, free_port(), [server.grpc_url], log, websocket_port=free_port(),
                            repository=repository).start()
    try:
        yield f"ws://{gateway.websocket_url}{STREAM_SOCKET_PATH}"
    finally:
        gateway.stop()
