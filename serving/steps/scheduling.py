"""The order in which the streaming model has its streams' utterances classified, when it is behind.

Every live stream's utterances and interim results go to the ensemble through one `Scheduler`: at
most `in_flight` classifications at the ensemble at once (the rest wait here, not in the ensemble's
queue, so that the order is decided here); the finished utterances of all streams first (what a
caller waits for), oldest first, then the interims, oldest first, then tentative ends. An interim
that is still waiting when its stream has something newer to classify (its next interim, the
utterance's end) is stale: it is dropped, never classified, and counted (`dropped`), so a server
that is behind spends its time on answers that are still wanted. With `in_flight` None everything
goes at once, as before.

A tentative end (segmentation.Tentative: the utterance as it will be if the pause that has begun
lasts) is classified ahead, while the pause is still being waited out, only when a place is free
and nothing else waits: if the pause lasts, `promote` makes it the utterance's answer (moved up
with the finished utterances if it has not started); if not, `withdraw` drops it, or, where it has
already run, counts it as wasted. Its outcomes are counted: used, dropped, wasted.

No Triton import: the stream model gives it the coroutine that classifies a span.
"""

import asyncio
import heapq
import itertools
import weakref
from collections.abc import Awaitable, Callable

FINAL, INTERIM, TENTATIVE = 0, 1, 2
"""Kinds of work, and their priorities: lower goes first."""
USED, DROPPED_UNRUN, WASTED = SPECULATION_OUTCOMES = ("used", "dropped", "wasted")

DROPPED = None
"""What a dropped interim's or tentative end's future gives."""


class Scheduler:
    def __init__(self, classify: Callable[[object], Awaitable], in_flight: int | None = None,
                 on_drop: Callable[[], None] | None = None, on_speculation: Callable[[str], None] | None = None):
        if in_flight is not None and in_flight < 1:
            raise ValueError(f"in_flight must be 1 or more (or None for no limit), not {in_flight}")
        self.classify, self.in_flight = classify, in_flight
        self.on_drop, self.on_speculation = on_drop, on_speculation
        self.waiting: list[list] = []  # [priority, order, stream, span, future], a heap
        self.started = weakref.WeakSet()  # tentative ends that have gone to the ensemble (none kept alive here)
        self.running = 0
        self.order = itertools.count()
        self.dropped = 0
        self.speculations = dict.fromkeys(SPECULATION_OUTCOMES, 0)

    def submit(self, stream, span, kind: int) -> asyncio.Future:
        """A future of the span's classification (DROPPED for an interim dropped as stale, or a
        withdrawn tentative end); call it from the event loop, in the stream's audio order."""
        if kind != TENTATIVE:
            stale = [entry for entry in self.waiting if entry[2] == stream and entry[0] == INTERIM]
            for entry in stale:  # a stream has at most one interim waiting
                self._remove(entry)
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop()
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, [kind, next(self.order), stream, span, future])
        self._start()
        return future

    def promote(self, future: asyncio.Future) -> asyncio.Future:
        """A tentative end whose pause has lasted: the utterance's answer, with a finished utterance's
        priority if it is still waiting."""
        entry = self._entry(future)
        if entry is not None:
            self._remove(entry, resolve=False)
            entry[0] = FINAL
            heapq.heappush(self.waiting, entry)
            self._start()
        self._count(USED)
        self.started.discard(future)
        return future

    def withdraw(self, future: asyncio.Future) -> None:
        """A tentative end whose pause did not last: dropped if it has not started, else wasted."""
        entry = self._entry(future)
        if entry is not None:
            self._remove(entry)
            self._count(DROPPED_UNRUN)
        elif future in self.started:
            self.started.discard(future)
            self._count(WASTED)

    @property
    def queued(self) -> int:
        """Classifications waiting for their turn."""
        return len(self.waiting)

    def _count(self, outcome: str) -> None:
        self.speculations[outcome] += 1
        if self.on_speculation is not None:
            self.on_speculation(outcome)

    def _entry(self, future: asyncio.Future) -> list | None:
        return next((entry for entry in self.waiting if entry[4] is future), None)

    def _remove(self, entry: list, resolve: bool = True) -> None:
        self.waiting.remove(entry)
        heapq.heapify(self.waiting)
        if resolve and not entry[4].done():
            entry[4].set_result(DROPPED)

    def _start(self) -> None:
        while self.waiting and (self.in_flight is None or self.running < self.in_flight):
            if self.waiting[0][0] == TENTATIVE and self.running:
                return  # a tentative end only on an idle ensemble: it must never delay an answer
            kind, _, stream, span, future = heapq.heappop(self.waiting)
            if getattr(stream, "abandoned", False):  # nobody is left to answer
                if not future.done():
                    future.set_result(DROPPED)
                continue
            self.running += 1
            if kind == TENTATIVE:
                self.started.add(future)
            asyncio.ensure_future(self._run(span, future))

    async def _run(self, span, future: asyncio.Future) -> None:
        try:
            result = await self.classify(span)
        except Exception as error:  # noqa: BLE001 - the caller's future carries it
            if not future.done():
                future.set_exception(error)
        else:
            if not future.done():
                future.set_result(result)
        finally:
            self.running -= 1
            self._start()
