"""Live streams over the edge's WebSocket (/v1/stream) on the real server (tiny export), from Python.

Through a real `make serve` (edge, stream gateway, server): the socket gives the events that gRPC
gives for the same audio, for any frame size and both encodings; every message is valid against the
one schema; each bad input ends its own socket with its error and matching close code while another
socket goes on; a socket that closes frees the server's stream at once; 50 sockets at once are served
and memory stays flat; past the server's limit a socket is refused; an idle socket and a client that
reads nothing are closed. The browser's side is tests/test_browser.py.
"""

import asyncio
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soxr
import websockets

from ser_triton.client.library import SERClient
from ser_triton.core import contract
from ser_triton.export.refresh import refresh
from ser_triton.serving import processes
from ser_triton.serving.stream_socket import BOUNDS, ERRORS, validator
from tests.server_helpers import eventually
from tests.socket_helpers import (END, RATE, Served, assert_same_events, framed, s16, start_message, talk,
                                  talk_async)
from tests.test_stream import chunked, grown, joined, seconds, stream_metrics

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def served(tiny_repository, tmp_path_factory):
    launched = Served(tiny_repository, tmp_path_factory.mktemp("socket"))
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def bounded(tiny_repository, tmp_path_factory):
    """The tiny export with room for 2 streams, each ended after 1.5 s without audio."""
    copy = tmp_path_factory.mktemp("bounded-socket") / "model_repository"
    shutil.copytree(tiny_repository, copy)
    refresh(copy, max_streams=2, stream_idle_seconds=1.5)
    launched = Served(copy, tmp_path_factory.mktemp("bounded-socket-logs"))
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def conversation(sentences):
    return joined([1.2, *[p for s in sentences for p in (s, 1.5)]])


def grpc_events(url: str, chunks, rate: int = RATE, segmentation: dict | None = None) -> list[dict]:
    with SERClient(url, timeout=60) as client:
        return [event.to_json_dict() for event in client.stream(chunks, rate, segmentation=segmentation)]


def assert_valid(messages) -> None:
    """Every message the server sent is one of the schema's server messages."""
    for message in messages:
        validator("server_message").validate(message)


def assert_ended_well(result) -> None:
    assert result.messages[-1] == {"event": "end"} and result.error is None, result.messages[-3:]
    assert result.code == 1000
    assert_valid(result.messages)


@pytest.mark.timeout(900)
def test_the_socket_gives_the_grpc_events_for_any_frame_size(served, conversation):
    audio, truth = conversation
    reference = grpc_events(served.grpc_url, chunked(audio, seconds(0.1)))
    assert [e["event"] for e in reference] == ["speech_start", "utterance"] * len(truth)
    for frame in (0.02, 0.1, 1.0, 16.0):  # 16 s: one frame of 1 MB, more than the server's 10 s chunk
        result = talk(served.socket_url, start_message(), framed(audio, frame))
        assert_ended_well(result)
        assert_same_events(result.events, reference)
    # 16-bit PCM at 8 kHz, live: as the gRPC client streams the same samples (both resample with soxr)
    at_8k = (np.clip(soxr.resample(audio, RATE, 8000), -1, 32767 / 32768) * 32768).round().astype(np.int16)
    live = talk(served.socket_url, start_message(sample_rate=8000, encoding="pcm_s16le", mode="live"),
                framed(at_8k / 32768, 0.1, s16, rate=8000), pace_seconds=0.06)
    assert_ended_well(live)
    assert_same_events(live.events, grpc_events(served.grpc_url, chunked(at_8k, 800), 8000))


def test_per_stream_rules_travel_in_the_start_message(served, sentences):
    audio, _ = joined([0.5, sentences[0], 1.0, sentences[1], 2.5])
    together = talk(served.socket_url, start_message(segmentation={"pause_seconds": 2.0}), framed(audio, 1.0))
    assert_ended_well(together)
    assert [e["event"] for e in together.events].count("utterance") == 1
    assert_same_events(together.events, grpc_events(served.grpc_url, [audio], segmentation={"pause_seconds": 2.0}))
    apart = talk(served.socket_url, start_message(), framed(audio, 1.0))
    assert [e["event"] for e in apart.events].count("utterance") == 2  # the rule's positive control


def bad_inputs(audio: np.ndarray) -> dict:
    """name -> (start message, frames, the error code it must get, words its message must hold)."""
    second = framed(audio[:RATE], 0.5)
    return {
        "a pcm_s16le frame with an odd byte count": (start_message(encoding="pcm_s16le"), [b"\0\1\2"],
                                                      "invalid_audio", "not whole 2-byte samples"),
        "NaN in f32le": (start_message(), [*second, np.full(100, np.nan, "<f4").tobytes()], "invalid_audio", "NaN"),
        "a frame over the bound": (start_message(), [bytes(BOUNDS.max_frame_bytes + 4)], "frame_too_large",
                                   f"over {BOUNDS.max_frame_bytes} bytes"),
        "text where audio is expected": (start_message(), [*second, "more audio"], "invalid_message", "binary frames"),
        "a missing start": (None, second, "invalid_message", "before the start message"),
        "an unknown encoding": (start_message(encoding="mp3"), second, "invalid_start", "'mp3' is not one of"),
        "a sample rate of 0": (start_message(sample_rate=0), second, "invalid_start", "less than the minimum"),
        "a sample rate of 10^9": (start_message(sample_rate=10**9), second, "invalid_start", "greater than the max"),
        "a second start": (start_message(), [*second, json.dumps(start_message())], "invalid_message",
                           "started already"),
        "a segmentation rule out of range": (start_message(segmentation={"pause_seconds": -1}), second,
                                             "invalid_start", "pause_seconds=-1 is out of range"),
        "an unknown segmentation rule": (start_message(segmentation={"pause": 1}), second, "invalid_start",
                                         "unknown segmentation rule"),
        "audio faster than allowed": (start_message(mode="live"), framed(audio[:seconds(12)], 0.5), "rate_limited",
                                      "times real time"),
    }


@pytest.mark.timeout(900)
def test_each_bad_input_ends_its_socket_with_its_error_and_no_other(served, conversation):
    """A good socket, live, goes on while each bad one comes and goes: its events are those of the same
    audio alone; each bad one gets its error event, then the close with the code that matches it."""
    audio, _ = conversation
    alone = grpc_events(served.grpc_url, chunked(audio, seconds(0.1)))
    heard, finished, good = threading.Event(), [], {}

    def good_socket():
        good["talk"] = talk(served.socket_url, start_message(mode="live"), framed(audio, 0.1), pace_seconds=0.1,
                            on_message=lambda message: heard.set())
        finished.append(time.monotonic())

    thread = threading.Thread(target=good_socket)
    thread.start()
    try:
        assert heard.wait(60), "the good socket had no event"
        outcomes = {name: talk(served.socket_url, start, frames, finish=False)
                    for name, (start, frames, _, _) in bad_inputs(audio).items()}
        bad_done = time.monotonic()
    finally:
        thread.join(180)
    for name, (_, _, code, words) in bad_inputs(audio).items():
        outcome = outcomes[name]
        assert outcome.error is not None and outcome.error["code"] == code, (name, outcome.messages)
        assert words in outcome.error["message"], (name, outcome.error)
        assert outcome.code == ERRORS[code].close and outcome.reason == code, (name, outcome.code, outcome.reason)
        assert outcome.messages[-1] is outcome.error and {"event": "end"} not in outcome.messages, name
        assert_valid(outcome.messages)
    assert finished and bad_done < finished[0]  # the good socket was open all the while
    assert_ended_well(good["talk"])
    assert_same_events(good["talk"].events, alone)


def test_a_closed_socket_frees_the_servers_stream_at_once(served, conversation):
    """The client vanishes mid-utterance (no close frame, no end message): the gateway flags the
    stream's end to the server, which frees it at once; the idle rule (10 s here) never has to."""
    audio, truth = conversation
    assert eventually(lambda: stream_metrics(served)[0] == 0)
    _, before = stream_metrics(served)

    async def vanish():
        async with websockets.connect(served.socket_url, subprotocols=[contract.STREAM_SOCKET_SUBPROTOCOL]) as ws:
            await ws.send(json.dumps(start_message(mode="live")))
            for frame in framed(audio[:truth[0][0] + seconds(1.0)], 0.1):  # into the first sentence
                await ws.send(frame)
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["event"] == "speech_start"
            assert stream_metrics(served)[0] == 1
            ws.transport.abort()

    asyncio.run(vanish())
    assert eventually(lambda: stream_metrics(served)[0] == 0), "the socket's stream is still live on the server"
    assert grown(before, stream_metrics(served)[1]) == {"end": 1}  # flagged, not left to the idle rule


@pytest.mark.timeout(900)
def test_fifty_sockets_at_once_are_served_and_memory_stays_flat(served, sentences):
    """Rounds of 50 sockets at once, all served; after two rounds of warm-up (the networks' arenas grow
    to the batches they see), four more leave the memory of the server, its stream model and the
    gateway where it was: nothing is kept of a socket that has closed."""
    clip, _ = joined([0.3, sentences[0], 1.0])

    async def fifty():
        return await asyncio.gather(*(talk_async(served.socket_url, start_message(), framed(clip, 0.5))
                                      for _ in range(50)))

    measured = []
    for _ in range(6):
        for result in asyncio.run(fifty()):
            assert_ended_well(result)
            assert [e["event"] for e in result.events] == ["speech_start", "utterance"]
        assert eventually(lambda: stream_metrics(served)[0] == 0)
        measured.append(served.resident_mib())
    warm = measured[1]
    assert len(warm) == 3, warm  # the server, its stream model's stub, the gateway
    grown_mib = {name: max(later[name] for later in measured[2:]) - mib for name, mib in warm.items()}
    assert max(grown_mib.values()) < 32, (grown_mib, measured)


def held_socket(url: str, audio: np.ndarray, go: threading.Event, out: list, started: threading.Event):
    """A live socket that keeps sending (silence once its audio is out) until `go`, then ends."""
    async def run():
        async with websockets.connect(url, subprotocols=[contract.STREAM_SOCKET_SUBPROTOCOL]) as ws:
            await ws.send(json.dumps(start_message(mode="live")))
            messages = []

            async def read():
                async for text in ws:
                    messages.append(json.loads(text))

            reading = asyncio.ensure_future(read())
            for frame in framed(audio, 0.1):
                await ws.send(frame)
                await asyncio.sleep(0.1)
            started.set()
            while not go.is_set():
                await ws.send(bytes(seconds(0.1) * 4))
                await asyncio.sleep(0.1)
            await ws.send(END)
            await asyncio.wait_for(reading, 60)
            out.append((messages, ws.close_code))

    asyncio.run(run())


@pytest.mark.timeout(600)
def test_past_the_limit_a_socket_is_refused_and_the_others_go_on(bounded, sentences):
    clip, _ = joined([0.3, sentences[0], 1.0])
    go, outs = threading.Event(), []
    starts = [threading.Event() for _ in range(2)]
    threads = [threading.Thread(target=held_socket, args=(bounded.socket_url, clip, go, outs, started))
               for started in starts]
    for thread in threads:
        thread.start()
    try:
        assert all(started.wait(60) for started in starts)
        refused = talk(bounded.socket_url, start_message(), framed(clip, 0.5))
    finally:
        go.set()
        for thread in threads:
            thread.join(120)
    assert refused.error["code"] == "at_capacity" and "limit of 2 live streams" in refused.error["message"]
    assert refused.code == ERRORS["at_capacity"].close == 1013
    assert len(outs) == 2
    for messages, code in outs:
        assert code == 1000 and messages[-1] == {"event": "end"}
        assert [m["event"] for m in messages[:-1]] == ["speech_start", "utterance"]
    again = talk(bounded.socket_url, start_message(), framed(clip, 0.5))  # the slots are free again
    assert_ended_well(again)


def test_an_idle_socket_is_closed(bounded, sentences):
    """The gateway's idle time is the server's (1.5 s in this export): a socket that sends nothing for
    longer, before its start or after some audio, is told so and closed."""
    before_start = talk(bounded.socket_url, None, [], finish=False)
    quiet = talk(bounded.socket_url, start_message(), framed(sentences[0][:RATE], 0.5), finish=False)
    for result in (before_start, quiet):
        assert result.error["code"] == "idle_timeout" and "nothing came for 1.5 s" in result.error["message"]
        assert result.code == ERRORS["idle_timeout"].close
    assert eventually(lambda: stream_metrics(bounded)[0] == 0)


@pytest.mark.timeout(600)
def test_a_client_that_reads_nothing_is_cut_off(served, sentences):
    """A client that sends a recording whose answer is hundreds of events (the rules below cut it into
    many tiny utterances with interim results), and then silence, but never reads: the gateway holds
    at most its bounded buffers of events, then cuts the client off (no event, no close: it reads
    nothing) and flags the stream's end to the server (its reason: end; the client flagged none, and
    sent audio all along, so neither the idle rule nor the client ended it). The gateway serves the
    next socket as before. At a gateway's own socket, so that nothing else (the edge) buffers between."""
    [(gateway, url)] = served.gateways().items()
    speech = np.concatenate(sentences * 3)  # ~30 s: about 700 events, 200 kB, with these rules
    rules = {"pause_seconds": 0.064, "padding_seconds": 0.0, "min_speech_seconds": 0.0, "max_seconds": 1.0,
             "split_search_seconds": 0.5, "interim_seconds": 0.064}
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    before, (_, ended_before) = processes.memory_mib(gateway)["rss_mib"], stream_metrics(served)
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.connect((host, int(port)))
    silent.sendall((f"GET {contract.STREAM_SOCKET_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {contract.STREAM_SOCKET_SUBPROTOCOL}\r\n\r\n"
                    ).encode())

    def send():  # the recording, then silence, until the gateway cuts it off
        try:
            silent.sendall(masked(json.dumps(start_message(segmentation=rules)).encode(), text=True))
            for frame in framed(speech, 1.0):
                silent.sendall(masked(frame, text=False))
            while True:
                silent.sendall(masked(bytes(4 * RATE), text=False))
                time.sleep(0.5)
        except OSError:
            pass

    sending = threading.Thread(target=send, daemon=True)
    sending.start()
    assert eventually(lambda: stream_metrics(served)[1] != ended_before, 180), "the unread socket was never ended"
    assert grown(ended_before, stream_metrics(served)[1]) == {"end": 1}  # flagged by the gateway
    assert eventually(lambda: stream_metrics(served)[0] == 0)
    silent.settimeout(30)
    received, cut = b"", False
    try:
        while chunk := silent.recv(1 << 16):
            received += chunk
        cut = True  # the gateway closed the connection
    except ConnectionResetError:
        cut = True
    except TimeoutError:
        pass
    silent.close()
    sending.join(30)
    assert cut, "the gateway still holds the connection of a client that reads nothing"
    assert b'"event": "speech_start"' in received and b'"event": "error"' not in received
    assert len(received) < 200_000  # what reached it before the cut: the bounded buffers, not the answer
    assert processes.memory_mib(gateway)["rss_mib"] - before < 20  # it held no more of them than its buffers
    after = talk(served.socket_url, start_message(), framed(sentences[0], 0.5))  # and the gateway goes on
    assert_ended_well(after)


def masked(payload: bytes, text: bool) -> bytes:
    """One client frame (RFC 6455: FIN, text or binary, masked), for the raw socket above."""
    mask = bytes([1, 2, 3, 4])
    header = bytes([0x81 if text else 0x82])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 1 << 16:
        header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        header += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    body = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), len(payload))
    return header + mask + body.tobytes()
