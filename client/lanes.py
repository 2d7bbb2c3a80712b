"""A live source of several channels as one stream of events: one server stream per speaker lane.

Each lane (a channel: core.channels) goes to the server as a stream of its own, in the same
chunks, so chunk k of every lane holds the same stretch of audio. Their events are merged in audio
order: an event travels in the answer to the chunk whose audio decided it, and it is handed on once
every other lane has been answered up to that chunk too (so nothing an earlier chunk decided on
another lane can still come), lane 1 before lane 2 within a chunk. An event may so wait for the
other lane's answers up to the same point of the audio; it never waits for later audio. Each
event is tagged with its lane's `channel` (1, 2, ...). An error on any lane ends them all.
"""

import dataclasses
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ser_triton.client.stream import Answered, LiveStream, StreamError
from ser_triton.core.result import StreamEvent

_END = object()


def _lane_chunks(source: queue.Queue) -> Iterator[np.ndarray]:
    while True:
        item = source.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class MergedStreams:
    """Iterate for the merged events of `chunks` ([samples, channels] arrays), lane n following
    channel `columns[n - 1]` (0-based), each lane on the stream that `open_stream(chunks)` makes."""

    def __init__(self, chunks: Iterable, columns: list[int], open_stream: Callable[[Iterable], LiveStream]):
        self.chunks, self.columns = chunks, columns
        self.inputs = [queue.Queue() for _ in columns]
        self.streams = [open_stream(_lane_chunks(lane_input)) for lane_input in self.inputs]
        self.merged: queue.Queue = queue.Queue()

    def _feed(self) -> None:
        """Each chunk of the source, channel by channel, to its lane's stream."""
        try:
            for chunk in self.chunks:
                chunk = np.asarray(chunk)
                if chunk.ndim != 2 or chunk.shape[1] <= max(self.columns):
                    raise ValueError(f"a chunk shaped {chunk.shape} has no channel {max(self.columns) + 1}: every "
                                     "chunk of a stream needs the same channels")
                for lane_input, column in zip(self.inputs, self.columns):
                    lane_input.put(chunk[:, column])
            ending = _END
        except Exception as error:  # noqa: BLE001 - whatever stops the source ends every lane, said
            ending = error
        for lane_input in self.inputs:
            lane_input.put(ending)

    def _follow(self, lane: int) -> None:
        try:
            for item in self.streams[lane].items():
                self.merged.put((lane, item))
            self.merged.put((lane, _END))
        except StreamError as error:
            self.merged.put((lane, StreamError(f"channel {lane + 1}: {error}")))

    def __iter__(self) -> Iterator[StreamEvent]:
        threads = [threading.Thread(target=self._feed, name="ser-lanes-feed", daemon=True)]
        threads += [threading.Thread(target=self._follow, args=(lane,), name=f"ser-lane-{lane + 1}", daemon=True)
                    for lane in range(len(self.streams))]
        for thread in threads:
            thread.start()
        waiting = [deque() for _ in self.streams]  # (chunk number, event) not yet handed on
        answered = [-1] * len(self.streams)  # the last chunk of each lane that has had all its events
        ended = [False] * len(self.streams)
        try:
            while not all(ended) or any(waiting):
                if not all(ended):
                    lane, item = self.merged.get()
                    if isinstance(item, StreamError):
                        raise item
                    if item is _END:
                        ended[lane] = True
                    elif isinstance(item, Answered):
                        answered[lane] = item
                    else:
                        number, event = item
                        waiting[lane].append((number, dataclasses.replace(event, channel=lane + 1)))
                yield from self._ready(waiting, answered, ended)
        finally:
            for lane, stream in enumerate(self.streams):
                if not ended[lane]:
                    stream.cancel("the merged stream has ended")
                self.inputs[lane].put(_END)

    @staticmethod
    def _ready(waiting: list[deque], answered: list[int], ended: list[bool]) -> Iterator[StreamEvent]:
        """Hand on, in (chunk, lane) order, each event that no other lane can still precede."""
        while True:
            heads = [(lane_events[0][0], lane) for lane, lane_events in enumerate(waiting) if lane_events]
            if not heads:
                return
            number, lane = min(heads)
            if not all(ended[other] or answered[other] >= number for other in range(len(waiting)) if other != lane):
                return
            yield waiting[lane].popleft()[1]
