"""A `make serve` for the WebSocket tests, and a plain client of /v1/stream (the `websockets` library,
asyncio): a start message, frames, an end; every text frame the server sent, and how it closed."""

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

from ser_triton.core import contract
from ser_triton.serving import processes
from ser_triton.serving.ports import Addresses
from tests.server_helpers import descendants, end, free_ports, start_launcher

RATE = contract.SAMPLE_RATE


class Served(Addresses):
    """A launcher (make serve) and what the tests reach of it: the edge's URLs, the gateways' own
    sockets, the servers' and the gateways' processes, the metrics of replica 1."""

    def __init__(self, repository: Path, tmp: Path, *extra: str):
        self.ports = free_ports()
        self.host, self.http_port, self.grpc_port = "127.0.0.1", self.ports["http"], self.ports["grpc"]
        self.logs = tmp / "logs"
        self.process, self.said = start_launcher(repository, self.ports, "--log-file",
                                                 str(self.logs / "tritonserver.log"), *extra)
        self.family = descendants(self.process.pid)

    @property
    def socket_url(self) -> str:
        return f"ws://{self.http_url}{contract.STREAM_SOCKET_PATH}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def arguments(self, pid: int) -> list[str]:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")

    def gateways(self) -> dict[int, str]:
        """pid -> its own WebSocket address (ws://host:port/v1/stream), for each stream gateway."""
        found = {}
        for pid in descendants(self.process.pid):
            try:
                arguments = self.arguments(pid)
            except OSError:
                continue
            if "ser_triton.serving.stream_gateway" in arguments:
                [listen] = [a.split("=", 1)[1] for a in arguments if a.startswith("--websocket-listen=")]
                found[pid] = f"ws://{listen}{contract.STREAM_SOCKET_PATH}"
        return found

    def resident_mib(self) -> dict[str, float]:
        """'name pid' -> resident MiB now, for the servers, their stream models' stubs and the gateways."""
        members = descendants(self.process.pid)
        watched = set(self.gateways())
        for pid, name in members.items():
            if name == "tritonserver":
                watched |= {pid} | {stub for stub, model in processes.stubs(pid).items() if model == contract.STREAM}
        return {f"{members[pid]} {pid}": processes.memory_mib(pid)["rss_mib"] for pid in watched}

    def logs_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs.glob("*.log"))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.said += self.process.communicate(timeout=90)[0]
        end(self.process, self.family | descendants(self.process.pid))


def f32(audio: np.ndarray) -> bytes:
    return np.asarray(audio, "<f4").tobytes()


def s16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 32767 / 32768) * 32768).round().astype("<i2").tobytes()


def framed(audio: np.ndarray, seconds: float, encode=f32, rate: int = RATE) -> list[bytes]:
    size = max(1, round(seconds * rate))
    return [encode(audio[i:i + size]) for i in range(0, audio.size, size)]


def start_message(**changes) -> dict:
    return {"type": "start", "sample_rate": RATE, "encoding": "f32le", "channels": 1, "mode": "file", **changes}


END = json.dumps({"type": "end"})


@dataclass
class Talk:
    """What a socket got: its text frames (parsed), its close code and reason."""
    messages: list = field(default_factory=list)
    code: int | None = None
    reason: str = ""

    @property
    def events(self) -> list[dict]:
        return [m for m in self.messages if m.get("event") not in ("end", "error")]

    @property
    def error(self) -> dict | None:
        errors = [m for m in self.messages if m.get("event") == "error"]
        return errors[-1] if errors else None


async def talk_async(url: str, start, frames, *, subprotocols=(contract.STREAM_SOCKET_SUBPROTOCOL,),
                     finish: bool = True, pace_seconds: float = 0.0, on_message=None, **connect) -> Talk:
    """One socket: `start` (a dict, text as it is, or None for none), each of `frames` (bytes: binary;
    str: text), then the end where `finish`; all the while reading. `pace_seconds`: a pause after each
    frame; `on_message(message)`: called with each as it comes; `connect`: more of websockets.connect's
    options (ssl, additional_headers)."""
    talk = Talk()
    async with websockets.connect(url, subprotocols=list(subprotocols) or None, max_size=None, open_timeout=30,
                                  **connect) as socket:
        async def send():
            try:
                if start is not None:
                    await socket.send(start if isinstance(start, str) else json.dumps(start))
                for frame in frames:
                    await socket.send(frame)
                    if pace_seconds:
                        await asyncio.sleep(pace_seconds)
                if finish:
                    await socket.send(END)
            except websockets.ConnectionClosed:
                pass  # the server ended it: its reason is in the messages

        sending = asyncio.ensure_future(send())
        try:
            async for text in socket:
                message = json.loads(text)
                talk.messages.append(message)
                if on_message is not None:
                    on_message(message)
        except websockets.ConnectionClosed:
            pass
        sending.cancel()
        talk.code, talk.reason = socket.close_code, socket.close_reason or ""
    return talk


def talk(url: str, start, frames, **options) -> Talk:
    return asyncio.run(asyncio.wait_for(talk_async(url, start, frames, **options), 300))


def event_shape(events) -> list[tuple]:
    return [(e["event"], e["start_sample"], e["end_sample"]) for e in events]


def assert_same_events(got: list[dict], want: list[dict], atol: float = 1e-5) -> None:
    """Events as dicts (the socket's, or StreamEvent.to_json_dict()): the same kinds and sample-exact
    spans, labels and transcripts, probabilities within atol; and every key of `want` in `got`."""
    assert event_shape(got) == event_shape(want)
    for g, w in zip(got, want):
        assert set(w) <= set(g), (g, w)
        if w.get("probabilities") is not None:
            assert (g["label"], g["transcript"]) == (w["label"], w["transcript"])
            np.testing.assert_allclose(list(g["probabilities"].values()), list(w["probabilities"].values()), atol=atol)
