"""One live stream to the streaming model over gRPC: chunks out as they come, events back as they come.

`SERClient.stream` and `SERClient.stream_file` are the way in. The chunks go out from a thread of
their own (a microphone or a paced file blocks between chunks) on one gRPC bidirectional stream,
as one Triton sequence with a random 63-bit ID: the first chunk flagged start, an empty last one
end. Events come back through tritonclient's callback into a queue that the caller's generator
reads, in audio order (`InOrder`: the server sends them so, and Triton keeps the order of one
request's responses but not across requests). The stream is done when the end's request and
every earlier one have had their final response; an error from the server (a bad chunk, the
stream limit, a replica that died) ends it with ClientError, and so does silence from the server
for longer than the client's timeout.
"""

import json
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Iterator

import numpy as np
import soxr
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ser_triton.core.audio import AudioError, mono_float32
from ser_triton.core.contract import (CHUNK, CHUNK_RATE, EMOTION, END_SAMPLE, EVENT, LABELS, MAX_CHUNK_SECONDS,
                                      PROBABILITIES, SAMPLE_RATE, START_SAMPLE, STREAM, TRANSCRIPT)
from ser_triton.core.result import StreamEvent

_DONE = object()


class StreamError(RuntimeError):
    """The stream ended before its end; the message says why."""


class Resampler:
    """Chunks at `rate` -> chunks at SAMPLE_RATE, the same samples for any chunking (soxr's stream)."""

    def __init__(self, rate: int):
        if rate <= 0:
            raise AudioError(f"sample rate must be positive, not {rate}")
        self.stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                           quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return samples
        return self.stream.resample_chunk(samples, last=last).astype(np.float32, copy=False)


def _event(result) -> StreamEvent | None:
    """The event a response carries; None for the empty final one."""
    event = result.as_numpy(EVENT)
    if event is None:
        return None
    end = int(result.as_numpy(END_SAMPLE).reshape(-1)[0])
    kind = event.reshape(-1)[0].decode()
    answer = {}
    if result.as_numpy(PROBABILITIES) is not None:
        probabilities = result.as_numpy(PROBABILITIES).reshape(-1)
        transcript = result.as_numpy(TRANSCRIPT).reshape(-1)[0]
        answer = {"label": result.as_numpy(EMOTION).reshape(-1)[0].decode(),
                  "probabilities": {label: float(p) for label, p in zip(LABELS, probabilities)},
                  "transcript": transcript.decode() if isinstance(transcript, bytes) else str(transcript)}
    return StreamEvent(kind, int(result.as_numpy(START_SAMPLE).reshape(-1)[0]), None if end < 0 else end, **answer)


class InOrder:
    """A stream's events in the order the server sent them, whatever order they arrive in.

    Each chunk is a request (ID "0", "1", ... in the order sent), and the server sends a chunk's
    events only after the previous chunk's final response, so its order is the order of request
    IDs. Triton delivers the responses of one request in the order sent, but not across requests:
    a decoupled model's responses may overtake each other between requests (Triton's
    decoupled-models guide), and under load a later chunk's utterance does arrive before an
    earlier chunk's. So a request's events go out once every earlier request has had its final
    response; until then they wait here."""

    def __init__(self):
        self.due = 0  # the earliest request whose final response has not arrived
        self.waiting: dict[int, list] = {}  # later requests' events, arrived early
        self.finished: set[int] = set()  # later requests whose final response arrived early

    def arrived(self, request: int, event: StreamEvent | None, final: bool) -> list[StreamEvent]:
        """The events that may go out now, in order, after this response (`event` None: it carried
        none, as the empty final response carries none)."""
        if request != self.due:
            self.waiting.setdefault(request, []).extend([event] if event is not None else [])
            if final:
                self.finished.add(request)
            return []
        ready = [event] if event is not None else []
        while final:
            self.due += 1
            ready += self.waiting.pop(self.due, [])
            final = self.due in self.finished
            self.finished.discard(self.due)
        return ready


class LiveStream:
    """One stream; iterate it for its events."""

    def __init__(self, url: str, chunks: Iterable, sample_rate: int, timeout: float, headers: dict,
                 connection: dict, segmentation: dict | None = None):
        self.url, self.timeout, self.headers = url, timeout, headers
        self.chunks, self.resample = chunks, Resampler(sample_rate)
        self.sequence = secrets.randbits(63) or 1
        self.parameters = {"segmentation": json.dumps(segmentation)} if segmentation else None
        self.events: queue.Queue = queue.Queue()
        self.open: set[str] = set()  # requests sent whose final response has not come
        self.in_order = InOrder()
        self.lock = threading.Lock()
        self.sent_all = threading.Event()
        self.last_heard = time.monotonic()
        self.client = grpcclient.InferenceServerClient(url, **connection)

    def _callback(self, result=None, error=None):
        self.last_heard = time.monotonic()
        if error is not None:
            self.events.put(StreamError(error.message() if isinstance(error, InferenceServerException) else str(error)))
            return
        response = result.get_response()
        final = response.parameters["triton_final_response"].bool_param
        for event in self.in_order.arrived(int(response.id), _event(result), final):
            self.events.put(event)
        if final:
            with self.lock:
                self.open.discard(response.id)
                finished = self.sent_all.is_set() and not self.open
            if finished:  # every request has had its final response: InOrder has let every event go
                self.events.put(_DONE)

    def _send(self, number: int, samples: np.ndarray, start: bool, end: bool) -> None:
        chunk = grpcclient.InferInput(CHUNK, [1, samples.size], "FP32")
        chunk.set_data_from_numpy(samples[np.newaxis])
        rate = grpcclient.InferInput(CHUNK_RATE, [1, 1], "INT32")
        rate.set_data_from_numpy(np.array([[SAMPLE_RATE]], dtype=np.int32))
        request = str(number)
        with self.lock:  # the end is open before it counts as sent: no final before it may end the stream
            self.open.add(request)
            if end:
                self.sent_all.set()
        self.client.async_stream_infer(STREAM, [chunk, rate], request_id=request, sequence_id=self.sequence,
                                       sequence_start=start, sequence_end=end, enable_empty_final_response=True,
                                       parameters=self.parameters if start else None)

    def _pump(self) -> None:
        """Send every chunk (split at MAX_CHUNK_SECONDS), then the end; any failure goes to the queue."""
        try:
            number, largest = 0, int(MAX_CHUNK_SECONDS * SAMPLE_RATE)
            for chunk in self.chunks:
                samples = self.resample(mono_float32(chunk))
                for first in range(0, samples.size, largest):
                    self._send(number, samples[first:first + largest], number == 0, False)
                    number += 1
            tail = self.resample(np.zeros(0, np.float32), last=True)
            if number == 0 and tail.size == 0:
                raise AudioError("the stream holds no audio")
            self._send(number, tail, number == 0, True)
        except (AudioError, ValueError) as error:
            self.events.put(StreamError(f"a chunk cannot be sent: {error}"))
        except InferenceServerException as error:
            self.events.put(StreamError(error.message()))
        except Exception as error:  # noqa: BLE001 - whatever stops the source ends the stream, said
            self.events.put(StreamError(f"{type(error).__name__}: {error}"))

    def __iter__(self) -> Iterator[StreamEvent]:
        self.client.start_stream(callback=self._callback, headers=self.headers or None)
        pump = threading.Thread(target=self._pump, name="ser-stream-send", daemon=True)
        pump.start()
        try:
            while True:
                try:
                    item = self.events.get(timeout=0.5)
                except queue.Empty:
                    with self.lock:
                        waiting = bool(self.open)
                    if waiting and time.monotonic() - self.last_heard > self.timeout:
                        raise StreamError(f"no answer from {self.url} for {self.timeout:g} s") from None
                    continue
                if item is _DONE:
                    return
                if isinstance(item, StreamError):
                    raise item
                yield item
        finally:
            self.client.stop_stream(cancel_requests=True)
            self.client.close()
