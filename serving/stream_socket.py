"""/v1/stream: live streams over a WebSocket, for clients without gRPC (a browser, a phone, any language).

The stream gateway (serving.stream_gateway) runs this beside each server, in its own event loop, and
the edge proxies `/v1/stream` here (serving/edge.conf.template). One socket is one stream of the
streaming model, spoken to over gRPC (ModelStreamInfer) on loopback:

- the client sends a start message, `{"type": "start", "sample_rate": N, "encoding": "pcm_s16le" |
  "f32le", "channels": 1}`, with an optional `"mode": "file"` and per-stream `"segmentation"` rules;
  then binary frames of audio in that encoding, of any size up to the bound; then `{"type": "end"}`;
- the gateway turns frames into 16 kHz float32 chunks (soxr, as the gRPC client does) and sends the
  server's events back as JSON text frames, exactly as `client/infer.py --stream --json` prints them
  (core.result.StreamEvent.to_json_dict: every key the events carry, passed through) and in the
  order the server sent them (client.stream.InOrder, as the gRPC client), then `{"event": "end"}`
  and a normal close (1000);
- anything wrong ends the socket with `{"event": "error", "code": CODE, "message": ...}` and a close
  whose code matches (ERRORS), and no other socket notices.

The messages' one schema is `web/ser-stream.schema.json` (package data, served by the edge at
/ser-stream.schema.json); the start message is checked against it here. The bounds are BOUNDS'
fields, each with its default below. Nothing is kept beyond the open sockets: a socket that closes
ends its server stream at once (its end is flagged, so the server frees its state).
"""

import asyncio
import dataclasses
import json
import logging
import secrets
import socket
import time
from functools import cache
from pathlib import Path

import grpc
import jsonschema
import numpy as np
import websockets
from tritonclient.grpc import InferResult, service_pb2
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ser_triton.client.stream import InOrder, Resampler, _event as stream_event
from ser_triton.core.audio import to_float32
from ser_triton.core.contract import (CHUNK, CHUNK_RATE, MAX_CHUNK_SECONDS, MAX_STREAM_SECONDS, SAMPLE_RATE, STREAM,
                                      STREAM_SOCKET_PATH, STREAM_SOCKET_SUBPROTOCOL)
from ser_triton.core.model_config import CONFIG_FILE, read_config
from ser_triton.serving.edge import WEB
from ser_triton.serving.steps import parameters
from ser_triton.serving.steps.segmentation import RuleError, SegmentationRules
from ser_triton.serving.supervisor import ServerError

SCHEMA_FILE = "ser-stream.schema.json"
"""The messages' schema, beside the page (edge.WEB), which the edge serves too."""

ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
"""What a binary frame may hold (named by the start message's `encoding`): samples of this type, mono."""
LIVE, FILE = "live", "file"
"""The start message's `mode`: live audio, paced by the bound on its speed; a file, as fast as the server takes it."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What one socket, and one gateway, may hold; the defaults are `make serve`'s (the gateway
    takes the limits of the server's streams from the exported repository)."""

    max_frame_bytes: int = 1 << 20
    """One binary frame (1 MiB: 32 s of 16 kHz pcm_s16le, 16 s of f32le); a larger one is refused from
    its header, before it is read (frame_too_large, 1009). Frames are cut into chunks of at most
    MAX_CHUNK_SECONDS for the server."""
    queued_frames: int = 2
    """Frames received and not yet handled, per socket; past it the gateway stops reading the socket
    (TCP pushes back on the client). With max_frame_bytes, what one socket can make the gateway hold."""
    live_speed: float = 2.0
    """A live socket may send audio at most this many times as fast as real time, ..."""
    live_burst_seconds: float = 3.0
    """... plus this much audio ahead (a client that catches up after a stall); past it: rate_limited.
    A start with "mode": "file" lifts both, within max_stream_seconds."""
    max_stream_seconds: float = MAX_STREAM_SECONDS
    """The most audio one socket may send (the edge's bound of a gRPC stream, 4 h); past it: stream_too_long."""
    unanswered_seconds: float = 30.0
    """Audio sent to the server whose answers have not all come: past it the gateway reads no more
    audio from the socket until they come (a file sent faster than the server classifies waits; the
    server never holds more of a socket's audio than this)."""
    max_sockets: int = 64
    """Open sockets at once (the server's limit of live streams: its export's --max-streams); one more
    is refused with at_capacity (1013)."""
    idle_seconds: float = 10.0
    """A socket that sends nothing for this long (the server's --stream-idle-seconds) is closed: idle_timeout."""
    send_timeout_seconds: float = 10.0
    """A client that reads none of its events for this long, once the gateway's buffers for it are full
    (write_limit_bytes, send_buffer_bytes), is cut off: never buffered without limit."""
    write_limit_bytes: int = 16 * 1024
    """Events waiting in the gateway for a slow client, past which sending waits."""
    send_buffer_bytes: int = 16 * 1024
    """The socket's kernel send buffer (SO_SNDBUF), so that a client that does not read is noticed soon."""
    ping_seconds: float = 20.0
    """A ping this often; a client (or a connection) that has not answered within as long again is closed."""
    farewell_seconds: float = 5.0
    """How long a socket whose client left waits for the server to take its end, before it cancels the call."""


BOUNDS = Bounds()


def served_limits(repository=None) -> tuple[Bounds, dict]:
    """The bounds and the segmentation rules of the streaming model in an exported `repository` (its
    --max-streams as max_sockets, its --stream-idle-seconds as idle_seconds); the defaults without one."""
    if repository is None:
        return BOUNDS, {}
    path = Path(repository) / STREAM / CONFIG_FILE
    try:
        values = {key: value.string_value for key, value in read_config(path).parameters.items()}
        return (dataclasses.replace(BOUNDS, max_sockets=int(values[parameters.MAX_STREAMS]),
                                    idle_seconds=float(values[parameters.STREAM_IDLE_SECONDS])),
                json.loads(values.get(parameters.SEGMENTATION_RULES, "{}")))
    except (OSError, KeyError, ValueError) as error:
        raise ServerError(f"cannot read the streaming model's limits from {path} ({error}): re-export the "
                          "repository with `make export`") from None

LOG = logging.getLogger(__name__)
LOG.setLevel(logging.WARNING)  # websockets logs a request's headers at DEBUG: never here


@dataclasses.dataclass(frozen=True)
class Error:
    close: int
    meaning: str


ERRORS = {
    "invalid_message": Error(CloseCode.UNSUPPORTED_DATA, "not a message of the protocol here: text that is not a "
                             "start or end message, audio or an end before the start, a second start"),
    "invalid_start": Error(CloseCode.POLICY_VIOLATION, "the start message breaks the schema (encoding, sample rate, "
                           "channels, mode) or holds a segmentation rule out of range"),
    "invalid_audio": Error(CloseCode.INVALID_DATA, "a frame that is not whole samples of the encoding, or holds "
                           "NaN or infinite samples"),
    "frame_too_large": Error(CloseCode.MESSAGE_TOO_BIG, "a frame over max_frame_bytes"),
    "rate_limited": Error(CloseCode.POLICY_VIOLATION, "live audio faster than live_speed times real time"),
    "stream_too_long": Error(CloseCode.POLICY_VIOLATION, "more audio than max_stream_seconds"),
    "idle_timeout": Error(CloseCode.POLICY_VIOLATION, "nothing sent for idle_seconds"),
    "at_capacity": Error(CloseCode.TRY_AGAIN_LATER, "max_sockets are open: try again in a moment"),
    "unavailable": Error(CloseCode.TRY_AGAIN_LATER, "no server could be reached"),
    "stream_error": Error(CloseCode.INTERNAL_ERROR, "the server ended the stream (its message says why)"),
    "internal_error": Error(CloseCode.INTERNAL_ERROR, "the gateway failed (a bug: its log says where)"),
}
"""Each error event's code, the close code that follows it, and what it means (docs/streaming.md)."""


class SocketError(Exception):
    """The socket ends with this error event; `code` is one of ERRORS."""

    def __init__(self, code: str, message: str):
        assert code in ERRORS, code
        super().__init__(message)
        self.code = code

    def event(self) -> dict:
        return {"event": "error", "code": self.code, "message": str(self)}


@cache
def schema() -> dict:
    """The protocol's JSON Schema (web/ser-stream.schema.json)."""
    return json.loads((WEB / SCHEMA_FILE).read_text())


@cache
def validator(definition: str) -> jsonschema.Draft202012Validator:
    """A validator of one of the schema's definitions ($defs), e.g. "start"."""
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema()["$defs"]})


def start_problem(message: dict) -> str | None:
    """What is wrong with a start message against the schema, in one line; None if nothing."""
    error = jsonschema.exceptions.best_match(validator("start").iter_errors(message))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path)
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    return (f"the start message's {where}: " if where else "the start message: ") + error.message \
        + (f" ({where}: {described})" if where and described else "")


class _Protocol(ServerProtocol):
    """websockets' server protocol, which refuses a frame over the bound from its header, before
    reading it, and closes with 1009: here it first says why, in the error event."""

    def fail(self, code, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is State.OPEN:
            self.send_text(json.dumps(SocketError("frame_too_large", f"a frame is over {self.max_message_size} "
                                                  "bytes: send smaller frames").event()).encode())
            reason = "frame_too_large"
        super().fail(code, reason)


def chunk_request(sequence: int, number: int, samples: np.ndarray, start: bool, end: bool,
                  segmentation: dict | None) -> service_pb2.ModelInferRequest:
    """One chunk of a stream as the streaming model takes it (as client.stream sends it with tritonclient):
    CHUNK [1, n] float32 at SAMPLE_RATE and CHUNK_RATE, in sequence `sequence`, with an empty final response."""
    request = service_pb2.ModelInferRequest(model_name=STREAM, id=str(number))
    for name, datatype, array in ((CHUNK, "FP32", samples.astype(np.float32, copy=False)[np.newaxis]),
                                  (CHUNK_RATE, "INT32", np.array([[SAMPLE_RATE]], np.int32))):
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    request.parameters["sequence_id"].int64_param = sequence
    request.parameters["sequence_start"].bool_param = start
    request.parameters["sequence_end"].bool_param = end
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    if start and segmentation:
        request.parameters["segmentation"].string_param = json.dumps(segmentation)
    return request


class Stream:
    """One socket's stream: its start, the audio it sent, the answers still due, and its gRPC call to a
    server. The call is driven by two tasks of its own (one writes the requests queued here, one
    queues the responses), so that nothing the socket's side cancels cancels the call: grpc.aio
    cancels a call whose read or write is cancelled, and the server must see the end flagged instead."""

    def __init__(self, start: dict, bounds: Bounds, call):
        self.bounds, self.call = bounds, call
        self.dtype = ENCODINGS[start["encoding"]]
        self.rate = int(start["sample_rate"])
        self.live = start.get("mode", LIVE) == LIVE
        self.segmentation = start.get("segmentation")
        self.resample = Resampler(self.rate)
        self.sequence = secrets.randbits(63) or 1
        self.sent = 0  # requests queued
        self.unanswered: dict[str, int] = {}  # request id -> its samples, until its final response
        self.in_order = InOrder()  # Triton keeps the order of one request's responses, not across requests
        self.answered = asyncio.Event()
        self.received_seconds = 0.0
        self.first_audio = None
        self.ended = False  # the end request is queued
        self.requests: asyncio.Queue = asyncio.Queue()  # as many as unanswered_seconds of audio allows
        self.responses: asyncio.Queue = asyncio.Queue()  # as many as the unanswered requests give
        self.tasks = [asyncio.ensure_future(self._write_requests()), asyncio.ensure_future(self._read_responses())]

    async def _write_requests(self) -> None:
        try:
            while True:
                request = await self.requests.get()
                await self.call.write(request)
                if request.parameters["sequence_end"].bool_param:
                    await self.call.done_writing()
                    return
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call failed or ended: _read_responses says how

    async def _read_responses(self) -> None:
        try:
            async for response in self.call:
                self.responses.put_nowait(response)
            self.responses.put_nowait(grpc.aio.EOF)
        except grpc.aio.AioRpcError as error:
            self.responses.put_nowait(error)

    async def response(self):
        """The next response of the server (grpc.aio.EOF after the last); AioRpcError where the call failed."""
        response = await self.responses.get()
        if isinstance(response, grpc.aio.AioRpcError):
            raise response
        return response

    def close(self) -> None:
        """Cancel the call (the server frees the stream at once only where its end was flagged)."""
        for task in self.tasks:
            task.cancel()
        self.call.cancel()

    def decode(self, frame: bytes) -> np.ndarray:
        size = self.dtype.itemsize
        if len(frame) % size:
            raise SocketError("invalid_audio", f"a frame of {len(frame)} bytes is not whole {size}-byte samples of "
                              f"{self.dtype.name}: send whole samples in each frame")
        samples = np.frombuffer(frame, self.dtype)
        bad = np.count_nonzero(~np.isfinite(samples)) if self.dtype.kind == "f" else 0
        if bad:
            raise SocketError("invalid_audio",
                              f"a frame holds {bad} NaN or infinite samples: send finite f32le samples")
        return to_float32(samples)

    def check_pace(self, samples: int) -> None:
        now = time.monotonic()
        self.first_audio = self.first_audio or now
        self.received_seconds += samples / self.rate
        if self.received_seconds > self.bounds.max_stream_seconds:
            raise SocketError("stream_too_long", f"the stream is over {self.bounds.max_stream_seconds:g} s of audio: "
                              "end it and open a new one")
        allowed = self.bounds.live_speed * (now - self.first_audio) + self.bounds.live_burst_seconds
        if self.live and self.received_seconds > allowed:
            raise SocketError("rate_limited", f"{self.received_seconds:.1f} s of live audio came in "
                              f"{now - self.first_audio:.1f} s, over {self.bounds.live_speed:g} times real time: "
                              'send live audio as it is heard, or start with "mode": "file" to send a recording')

    async def write(self, samples: np.ndarray, end: bool = False, wait: bool = True) -> None:
        """Queue audio for the server (cut into chunks it takes), and with `end` the end of the stream;
        first, while `wait`, until the server has answered enough of the audio before."""
        largest = int(MAX_CHUNK_SECONDS * SAMPLE_RATE)
        pieces = [samples[first:first + largest] for first in range(0, samples.size, largest)]
        if end:
            pieces.append(np.zeros(0, np.float32))
        for number, piece in enumerate(pieces):
            limit = self.bounds.unanswered_seconds * SAMPLE_RATE
            while wait and self.unanswered and sum(self.unanswered.values()) + piece.size > limit:
                self.answered.clear()
                await self.answered.wait()
            last = end and number == len(pieces) - 1
            request = chunk_request(self.sequence, self.sent, piece, self.sent == 0, last, self.segmentation)
            self.unanswered[request.id] = piece.size
            self.sent += 1
            self.ended = self.ended or last
            self.requests.put_nowait(request)

    def finished(self, response) -> bool:
        """Count a response's final flag; True once the end's and every earlier request's have come."""
        if response.parameters["triton_final_response"].bool_param:
            self.unanswered.pop(response.id, None)
            self.answered.set()
        return self.ended and not self.unanswered


class Bridge:
    """The WebSocket server of one gateway: each socket a stream to the servers behind `channel`."""

    def __init__(self, channel: grpc.aio.Channel, bounds: Bounds = BOUNDS, rules: dict | None = None):
        """`rules`: the server's own segmentation rules (its export's), which a start's rules change."""
        self.bounds, self.rules = bounds, rules or {}
        self.method = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                            response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
        self.open = 0
        self.farewells: set[asyncio.Task] = set()

    def serve(self, host: str, port: int):
        """The websockets server (an async context manager) on host:port."""
        bounds = self.bounds

        def connection(protocol, server, **options):  # the same protocol, made to say why it refuses a frame
            return ServerConnection(_Protocol(subprotocols=[STREAM_SOCKET_SUBPROTOCOL], max_size=bounds.max_frame_bytes,
                                              logger=LOG), server, **options)

        return websockets.serve(self.handle, host, port, create_connection=connection, compression=None,
                                max_size=bounds.max_frame_bytes, max_queue=bounds.queued_frames,
                                write_limit=bounds.write_limit_bytes, ping_interval=bounds.ping_seconds,
                                ping_timeout=bounds.ping_seconds, logger=LOG, server_header=None,
                                process_request=self._only_the_path)

    @staticmethod
    def _only_the_path(connection, request):
        if request.path.partition("?")[0] != STREAM_SOCKET_PATH:
            return connection.respond(404, f"the live stream is at {STREAM_SOCKET_PATH}\n")
        return None

    async def handle(self, connection) -> None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.bounds.send_buffer_bytes)
        if self.open >= self.bounds.max_sockets:
            await self._end(connection, SocketError("at_capacity", f"this server is at its limit of "
                                                    f"{self.bounds.max_sockets} live streams: try again in a moment"))
            return
        self.open += 1
        stream = None
        try:
            start = await self._start(connection)
            stream = Stream(start, self.bounds, self.method())
            await self._run(connection, stream)
            await self._send(connection, {"event": "end"})
            await connection.close()
        except SocketError as error:
            await self._end(connection, error)
        except websockets.ConnectionClosed:
            pass  # the client went away: its stream ends below
        except grpc.aio.AioRpcError as error:
            code = "unavailable" if error.code() == grpc.StatusCode.UNAVAILABLE else "stream_error"
            await self._end(connection, SocketError(code, error.details() or str(error.code())))
        except Exception as error:  # noqa: BLE001 - the socket ends, said; the gateway and other sockets go on
            LOG.exception("a stream socket failed")
            await self._end(connection, SocketError("internal_error", f"{type(error).__name__}: {error}"))
        finally:
            self.open -= 1
            if stream is not None:
                self._farewell(stream)

    def _farewell(self, stream: Stream) -> None:
        """The server frees a stream once its end is flagged: flag it (where it was not), give the server
        a moment to take it, then cancel the call (its answers are for nobody)."""
        async def flag_end_then_cancel():
            try:
                if not stream.ended:
                    async with asyncio.timeout(self.bounds.farewell_seconds):
                        await stream.write(np.zeros(0, np.float32), end=True, wait=False)
                        while True:
                            response = await stream.response()
                            if response is grpc.aio.EOF or response.error_message \
                                    or stream.finished(response.infer_response):
                                break
            except (TimeoutError, grpc.aio.AioRpcError):
                pass
            finally:
                stream.close()

        task = asyncio.ensure_future(flag_end_then_cancel())
        self.farewells.add(task)
        task.add_done_callback(self.farewells.discard)

    async def _receive(self, connection):
        try:
            async with asyncio.timeout(self.bounds.idle_seconds):
                return await connection.recv()
        except TimeoutError:
            raise SocketError("idle_timeout", f"nothing came for {self.bounds.idle_seconds:g} s: send audio "
                              "(silence too) while the stream is open, and end it with {\"type\": \"end\"}") from None

    @staticmethod
    def _message(text: str) -> dict:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("type") not in ("start", "end"):
            raise SocketError("invalid_message", 'a text frame must be a JSON message, {"type": "start", ...} first '
                              'and {"type": "end"} last; audio goes in binary frames')
        return message

    async def _start(self, connection) -> dict:
        message = await self._receive(connection)
        if isinstance(message, bytes):
            raise SocketError("invalid_message", 'audio came before the start message: send {"type": "start", '
                              '"sample_rate": N, "encoding": "pcm_s16le" or "f32le", "channels": 1} first')
        start = self._message(message)
        if start["type"] != "start":
            raise SocketError("invalid_message", "the stream ended before it started: send the start message first")
        problem = start_problem(start)
        if problem:
            raise SocketError("invalid_start", problem)
        if start.get("segmentation"):
            try:
                SegmentationRules.from_dict({**self.rules, **start["segmentation"]})
            except RuleError as error:
                raise SocketError("invalid_start", f"the start message's segmentation: {error}") from None
        return start

    async def _run(self, connection, stream: Stream) -> None:
        """Audio in and events out at once, until the end's answers have all gone out (or one side fails)."""
        reading = asyncio.ensure_future(self._read(connection, stream))
        answering = asyncio.ensure_future(self._answer(connection, stream))
        try:
            done, _ = await asyncio.wait({reading, answering}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
            await answering
        finally:
            for task in (reading, answering):
                task.cancel()
            await asyncio.gather(reading, answering, return_exceptions=True)

    async def _read(self, connection, stream: Stream) -> None:
        while not stream.ended:
            message = await self._receive(connection)
            if isinstance(message, str):
                if self._message(message)["type"] == "start":
                    raise SocketError("invalid_message", "the stream has started already: one start per socket "
                                      "(open another socket for another stream)")
                await stream.write(stream.resample(np.zeros(0, np.float32), last=True), end=True)
                continue
            if not message:
                continue
            samples = stream.decode(message)
            stream.check_pace(samples.size)
            samples = stream.resample(samples)
            if samples.size:
                await stream.write(samples)

    async def _answer(self, connection, stream: Stream) -> None:
        while True:
            response = await stream.response()
            if response is grpc.aio.EOF:
                raise SocketError("stream_error", "the server ended the stream before its end")
            if response.error_message:
                raise SocketError("stream_error", response.error_message)
            answer = response.infer_response  # its events go in the order the server sent them (InOrder)
            final = answer.parameters["triton_final_response"].bool_param
            for event in stream.in_order.arrived(int(answer.id), stream_event(InferResult(answer)), final):
                await self._send(connection, event.to_json_dict())
            if stream.finished(answer):
                return

    async def _send(self, connection, message: dict) -> None:
        try:
            async with asyncio.timeout(self.bounds.send_timeout_seconds):
                await connection.send(json.dumps(message))
        except TimeoutError:
            connection.transport.abort()  # it reads nothing: not even a close would reach it
            raise websockets.ConnectionClosed(None, None) from None

    async def _end(self, connection, error: SocketError) -> None:
        """The error event, then the close with its code; a client that has gone misses both."""
        try:
            await self._send(connection, error.event())
            await connection.close(ERRORS[error.code].close, error.code)
        except websockets.ConnectionClosed:
            pass
