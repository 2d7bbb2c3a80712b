"""The streaming model: live audio in chunks, speech segmented on the server, each utterance classified.

A decoupled Python model under Triton's sequence batcher: one sequence (CORRID) per stream, its
first chunk flagged start and its last end; the state of each stream (its Segmenter: Silero VAD
and the segmentation rules) lives here between chunks. Every chunk's request answers with the
events its audio decides, through the request's own response sender, then a final flag:
- speech_start at once;
- utterance (start, end, emotion, probabilities, transcript, its words timed from the stream's
  start) once the ensemble has classified that span of audio, and interim (the running utterance
  so far) every few seconds of audio:
  each through a BLS call to the ensemble, so the utterances of many streams are batched
  together by its dynamic batcher, and the stream goes on meanwhile.
The chunks of one execute (the sequence batcher hands over up to max_batch_size streams' chunks
at once) have their VAD windows scored together, one Silero run per 32 ms step for all of them
(segmentation.feed_together), each stream's events the same as alone. A stream's events leave in audio order (Triton keeps that order within a chunk's request, not
across requests: the client orders them by request ID, client/stream.py). The classifications of
all streams go through one scheduler (steps/scheduling.py): with a limit, a few at the ensemble at
once, finished utterances before interim results, and an interim that is still waiting when its
stream has something newer is dropped (counted). Bounds: at most `max_streams` streams at once
(past it a new stream gets an error at its first chunk and the others go on); a stream idle for
`stream_idle_seconds` (or whose client went away) is ended and its state freed; a bad chunk (not
16 kHz, NaN, empty before the end, over the chunk limit) ends its stream with an error.
On the server's metrics port, a gauge counts the live streams and a counter the ended ones by
how they ended (END_REASONS).
"""

import asyncio
import dataclasses
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from . import parameters
from .backend import Step
from . import scheduling
from .scheduling import DROPPED, SPECULATION_OUTCOMES, Scheduler
from .segmentation import (Interim, RuleError, SegmentationRules, Segmenter, SpeechDetector, SpeechStart, Tentative,
                           Utterance, Withdrawn, feed_together, vad_session)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
ENDED_REMEMBERED = 4096
"""How many ended streams' reasons are kept, to answer a late chunk with why its stream ended."""
SEND_THREADS = 4
"""Threads that send the streams' responses (_send_off)."""
END, IDLE, GONE, ERROR, REFUSED = END_REASONS = ("end", "idle", "gone", "error", "refused")
"""How a stream ended, the `reason` label of the ended streams' counter: its end flagged; idle (no
audio for stream_idle_seconds: a stopped client, or one that went away between chunks); gone (its
client went away while an answer was on its way); error (a bad chunk, a failed classification);
refused (past max_streams)."""


class StreamEnded(Exception):
    """The stream cannot go on; the message says why and what to do."""


class Stream:
    def __init__(self, segmenter: Segmenter):
        self.segmenter = segmenter
        self.last_chunk = time.monotonic()
        self.sent = None
        """The task that sends the previous chunk's events: the next chunk's wait for it (audio order)."""
        self.tentative = None
        """(start, end, future) of the tentative end being classified ahead, until used or withdrawn."""
        self.abandoned = False
        """Set once the stream has ended otherwise than by its end flag (idle, gone, an error): what it
        still had waiting to be classified is dropped, since nobody is left to answer."""


@dataclasses.dataclass
class Chunk:
    """One request's audio, checked, with what answering it takes."""

    sender: object
    corrid: int
    stream: Stream
    samples: np.ndarray
    end: bool


def _value(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else tensor.as_numpy()


class TritonPythonModel(Step):
    def setup(self):
        self.sample_rate = int(self.parameters[parameters.SAMPLE_RATE])
        self.max_audio_seconds = float(self.parameters[parameters.MAX_AUDIO_SECONDS])
        self.rules = self._rules(json.loads(self.parameters.get(parameters.SEGMENTATION_RULES, "{}")))
        self.max_streams = int(self.parameters[parameters.MAX_STREAMS])
        self.idle_seconds = float(self.parameters[parameters.STREAM_IDLE_SECONDS])
        self.max_chunk_samples = int(float(self.parameters[parameters.MAX_CHUNK_SECONDS]) * self.sample_rate)
        self.classifier = json.loads(self.parameters[parameters.CLASSIFIER])
        in_flight = int(self.parameters.get(parameters.STREAM_IN_FLIGHT, "0"))
        self.scheduler = Scheduler(self._classify, in_flight or None, on_drop=self._dropped,
                                   on_speculation=self._speculated)
        ahead = float(self.parameters.get(parameters.STREAM_SPECULATE_SECONDS, "0"))
        self.tentative_after = round(ahead * self.sample_rate) if ahead > 0 else None
        self.session = vad_session(self.file(parameters.VAD_FILE))
        self.vad_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-vad")
        """The VAD runs here (ONNX Runtime lets go of the GIL), off the loop that sends the answers:
        in a profile of 64 tiny streams the loop spent about as long on sends as on the VAD."""
        self.feeding = asyncio.Lock()
        self.send_threads = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="stream-send")
        self.vad_tensors = json.loads(self.parameters[parameters.VAD_TENSORS])
        self.streams: dict[int, Stream] = {}
        self.ended: OrderedDict[int, str] = OrderedDict()
        self.lock = threading.Lock()
        self._metrics(json.loads(self.parameters[parameters.STREAM_METRICS]))
        self.stopping = threading.Event()
        threading.Thread(target=self._sweep, name="stream-idle-sweep", daemon=True).start()

    def _rules(self, values: dict) -> SegmentationRules:
        rules = SegmentationRules.from_dict(values)
        if rules.max_seconds > self.max_audio_seconds:
            raise RuleError(f"segmentation rule max_seconds={rules.max_seconds:g} is over the ensemble's audio limit "
                            f"({self.max_audio_seconds:g} s): lower it, or export with a higher --max-audio-seconds")
        return rules

    def _metrics(self, names: dict) -> None:
        labels = {"model": self.config["name"]}
        self.live_family = pb_utils.MetricFamily(name=names["live"], description="live streams: open, their state held",
                                                 kind=pb_utils.MetricFamily.GAUGE)
        self.ended_family = pb_utils.MetricFamily(name=names["ended"], description="streams ended, by reason: "
                                                  + ", ".join(END_REASONS), kind=pb_utils.MetricFamily.COUNTER)
        self.dropped_family = pb_utils.MetricFamily(
            name=names["dropped"], kind=pb_utils.MetricFamily.COUNTER,
            description="interim results dropped unclassified: stale (their stream had something newer) while the "
                        "server was behind")
        self.live = self.live_family.Metric(labels=labels)
        self.ended_by = {reason: self.ended_family.Metric(labels={**labels, "reason": reason})
                         for reason in END_REASONS}
        self.speculation_family = pb_utils.MetricFamily(
            name=names["speculations"], kind=pb_utils.MetricFamily.COUNTER,
            description="utterances classified ahead of the end of their pause, by outcome: used (the pause "
                        "lasted), dropped (it did not, before it ran), wasted (it did not, after it ran)")
        self.dropped_interims = self.dropped_family.Metric(labels=labels)
        self.speculations = {outcome: self.speculation_family.Metric(labels={**labels, "outcome": outcome})
                             for outcome in SPECULATION_OUTCOMES}

    def _dropped(self) -> None:
        with self.lock:
            if self.dropped_interims is not None:
                self.dropped_interims.increment(1)

    def _speculated(self, outcome: str) -> None:
        with self.lock:
            if self.speculations is not None:
                self.speculations[outcome].increment(1)

    def finalize(self):
        self.stopping.set()
        self.vad_thread.shutdown(wait=False, cancel_futures=True)
        self.send_threads.shutdown(wait=False, cancel_futures=True)
        with self.lock:  # a metric goes before its family (the stub says so otherwise)
            self.live = self.ended_by = self.dropped_interims = self.speculations = None
            self.live_family = self.ended_family = self.dropped_family = self.speculation_family = None

    # --- stream bookkeeping -------------------------------------------------------------------

    def _end(self, corrid: int, reason: str, how: str) -> None:
        """End a stream, saying why to a late chunk; `how` (END_REASONS) is counted for a live one."""
        with self.lock:
            stream = self.streams.pop(corrid, None)
            live = stream is not None
            if live and how != END:
                stream.abandoned = True
            self.ended[corrid] = reason
            while len(self.ended) > ENDED_REMEMBERED:
                self.ended.popitem(last=False)
            if live and self.live is not None:
                self.ended_by[how].increment(1)
                self.live.set(len(self.streams))

    def _sweep(self) -> None:
        """End the streams that sent nothing for idle_seconds (their client stopped, or went away)."""
        while not self.stopping.wait(min(1.0, self.idle_seconds / 4)):
            now = time.monotonic()
            with self.lock:
                idle = [c for c, s in self.streams.items() if now - s.last_chunk > self.idle_seconds]
            for corrid in idle:
                self._end(corrid, f"it sent no audio for over {self.idle_seconds:g} s", IDLE)

    def _open(self, corrid: int, request) -> Stream:
        rules = self.rules
        given = json.loads(request.parameters() or "{}").get("segmentation")
        if given:
            try:
                rules = self._rules({**dataclasses.asdict(self.rules), **json.loads(given)})
            except (RuleError, ValueError, TypeError) as error:
                self.ended_by[ERROR].increment(1)
                raise StreamEnded(f"this stream's segmentation parameter is not usable: {error}") from None
        with self.lock:
            self.streams.pop(corrid, None)
            self.ended.pop(corrid, None)
            if len(self.streams) >= self.max_streams:
                self.ended_by[REFUSED].increment(1)
                raise StreamEnded(f"the server is at its limit of {self.max_streams} live streams: try again in a "
                                  "moment (or on another replica)")
            stream = self.streams[corrid] = Stream(Segmenter(SpeechDetector(self.session, self.vad_tensors), rules,
                                                             self.tentative_after))
            self.live.set(len(self.streams))
        return stream

    def _stream(self, corrid: int, start: bool, request) -> Stream:
        if start:
            return self._open(corrid, request)
        with self.lock:
            stream = self.streams.get(corrid)
            reason = self.ended.get(corrid)
        if stream is None:
            raise StreamEnded(f"stream {corrid} has ended ({reason}): open a new stream" if reason else
                              f"stream {corrid} is not open: flag its first chunk as the start of the stream")
        return stream

    def _chunk(self, request, end: bool) -> np.ndarray:
        rate = _value(request, self.inputs["rate"])
        if rate is not None and int(rate.reshape(-1)[0]) != self.sample_rate:
            raise StreamEnded(f"{self.inputs['rate']} is {int(rate.reshape(-1)[0])} Hz: send mono "
                              f"{self.sample_rate} Hz float32 chunks (the ser client resamples)")
        chunk = _value(request, self.inputs["audio"]).reshape(-1)
        name = self.inputs["audio"]
        if chunk.size == 0 and not end:
            raise StreamEnded(f"{name} is empty: only the end-of-stream request may carry no audio")
        if chunk.size > self.max_chunk_samples:
            raise StreamEnded(f"{name} holds {chunk.size / self.sample_rate:.1f} s: send chunks of at most "
                              f"{self.max_chunk_samples / self.sample_rate:g} s")
        bad = np.count_nonzero(~np.isfinite(chunk))  # the chunk's one scan: the segmenter takes it as checked
        if bad:
            raise StreamEnded(f"{name} has {bad} NaN or infinite samples: send finite float32 samples")
        return chunk

    # --- requests -----------------------------------------------------------------------------

    async def execute(self, requests):
        taken = [chunk for chunk in map(self._take, requests) if chunk is not None]
        async with self.feeding:  # executions feed their chunks in the order they came (the lock is fair)
            while taken:  # the streams' chunks fed together, a stream's second chunk (if ever) in the next round
                streams, this_round, later = set(), [], []
                for chunk in taken:
                    (later if chunk.corrid in streams else this_round).append(chunk)
                    streams.add(chunk.corrid)
                await self._feed(this_round)
                taken = later
        # The bundled stub (2.51) files this coroutine's future only after scheduling it, and logs
        # "Cannot remove future from background" for one that finished before: a millisecond apart.
        await asyncio.sleep(0.001)
        return None

    def _take(self, request) -> "Chunk | None":
        """A request's chunk, checked, with its stream; None where it was answered with an error."""
        sender = request.get_response_sender()
        corrid = int(_value(request, "CORRID").reshape(-1)[0])
        start = bool(_value(request, "SEQUENCE_START").reshape(-1)[0])
        end = bool(_value(request, "SEQUENCE_END").reshape(-1)[0])
        try:
            stream = self._stream(corrid, start, request)
            samples = self._chunk(request, end)
        except (StreamEnded, ValueError) as error:
            self._fail(sender, corrid, str(error))
            return None
        stream.last_chunk = time.monotonic()
        return Chunk(sender, corrid, stream, samples, end)

    def _fail(self, sender, corrid: int, message: str) -> None:
        self._end(corrid, message, ERROR)
        self._send(sender, pb_utils.InferenceResponse(
            error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)), FINAL)

    async def _feed(self, chunks: list) -> None:
        """Chunks of distinct streams: their VAD windows scored together (one model run per step for
        all of them) in the VAD's own thread, while this loop goes on sending; then each stream's
        events classified and sent in order."""
        try:
            decided = await asyncio.get_running_loop().run_in_executor(self.vad_thread, self._segment, chunks)
        except ValueError as error:  # chunks are checked as they come: not expected, but never silent
            for chunk in chunks:
                self._fail(chunk.sender, chunk.corrid, f"the stream's audio could not be segmented: {error}")
            return
        for chunk, events in zip(chunks, decided):
            # classification is asked for now, for every utterance of every stream (the scheduler decides
            # when each runs, and drops stale interims); the events leave in order
            results = self._schedule(chunk.stream, events)
            chunk.stream.sent = asyncio.ensure_future(self._send_in_order(chunk.sender, chunk.stream.sent, results,
                                                                          chunk.corrid))
            if chunk.end:
                self._end(chunk.corrid, "its end was flagged", END)

    @staticmethod
    def _segment(chunks: list) -> list:
        """Each chunk's events (in the VAD's thread): its audio's (none from the empty end-of-stream
        chunk), then, at the end of its stream, the last."""
        decided = feed_together([chunk.stream.segmenter for chunk in chunks], [chunk.samples for chunk in chunks])
        return [events + (chunk.stream.segmenter.finish() if chunk.end else [])
                for chunk, events in zip(chunks, decided)]

    def _schedule(self, stream: Stream, events: list) -> list:
        """What each event of a chunk will send, in order: a speech start as it is, an answer as the
        scheduler's future; a tentative end is classified ahead (no event), and becomes the answer of
        the utterance it foresaw, or is withdrawn."""
        results = []
        for event in events:
            if isinstance(event, SpeechStart):
                results.append(event)
            elif isinstance(event, Tentative):
                stream.tentative = (event.start, event.end, self.scheduler.submit(stream, event, scheduling.TENTATIVE))
            elif isinstance(event, Withdrawn):
                if stream.tentative is not None:
                    self.scheduler.withdraw(stream.tentative[2])
                stream.tentative = None
            elif stream.tentative is not None and isinstance(event, Utterance) \
                    and stream.tentative[:2] == (event.start, event.end):
                results.append(self.scheduler.promote(stream.tentative[2]))
                stream.tentative = None
            else:
                kind = scheduling.FINAL if isinstance(event, Utterance) else scheduling.INTERIM
                results.append(self.scheduler.submit(stream, event, kind))
        return results

    async def _send_in_order(self, sender, previous, results, corrid: int) -> None:
        if previous is not None:
            await previous
        try:
            for result in results:
                if isinstance(result, SpeechStart):
                    response = self._event("speech_start", result.start, -1)
                else:
                    response = await result
                    if response is DROPPED:  # a stale interim, never classified
                        continue
                if not await self._send_off(sender, response):
                    self._end(corrid, "its client went away", GONE)
                    return
        except Exception as error:  # noqa: BLE001 - a failed classification ends its stream, said, never silently
            message = str(error) if isinstance(error, StreamEnded) else f"the stream failed: {error}"
            self._end(corrid, message, ERROR)
            self._send(sender, pb_utils.InferenceResponse(
                error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)), FINAL)
            return
        await self._send_off(sender, None, FINAL)

    async def _send_off(self, sender, response, flags: int = 0) -> bool:
        """_send in a sender thread: a send waits for the server to take the response (a round trip),
        and this loop, which has every stream's answers to send, goes on meanwhile. A stream's sends
        still go one after the other (_send_in_order awaits each)."""
        return await asyncio.get_running_loop().run_in_executor(self.send_threads, self._send, sender, response, flags)

    async def _classify(self, span):
        tensors = self.classifier
        request = pb_utils.InferenceRequest(
            model_name=tensors["model"], inputs=[pb_utils.Tensor(tensors["audio"], span.samples[np.newaxis])],
            requested_output_names=[tensors[name] for name in ("probabilities", "transcript", "label", "words")])
        answer = await request.async_exec()
        if answer.has_error():
            raise StreamEnded(f"classifying the utterance {span.start}-{span.end} failed: {answer.error().message()}")

        def output(name):
            return pb_utils.get_output_tensor_by_name(answer, tensors[name]).as_numpy()

        event = "interim" if isinstance(span, Interim) else "utterance"
        return self._event(event, span.start, span.end, output("label").reshape(-1)[0],
                           output("probabilities").reshape(1, -1), output("transcript").reshape(-1)[0],
                           self._stream_time(output("words").reshape(-1)[0], span.start))

    def _stream_time(self, words: bytes, start: int) -> bytes:
        """The ensemble's words (timed from the utterance's start, in whole CTC frames) timed from
        the stream's start: the sum taken in samples, exactly."""
        def moved(seconds: float) -> float:
            return (start + round(seconds * self.sample_rate)) / self.sample_rate

        return json.dumps([{"word": word["word"], "start": moved(word["start"]), "end": moved(word["end"])}
                           for word in json.loads(words)]).encode()

    def _event(self, event: str, start: int, end: int, label=None, probabilities=None, transcript=None,
               words: bytes = b"[]"):
        outputs = {"event": np.array([[event.encode()]], dtype=np.object_),
                   "start": np.array([[start]], dtype=np.int64), "end": np.array([[end]], dtype=np.int64)}
        if label is not None:
            outputs |= {"label": np.array([[label]], dtype=np.object_),
                        "probabilities": probabilities.astype(np.float32),
                        "transcript": np.array([[transcript]], dtype=np.object_),
                        "words": np.array([[words]], dtype=np.object_)}
        return self.respond(outputs)

    @staticmethod
    def _send(sender, response, flags: int = 0) -> bool:
        """Send; False where the client has gone (its stream was cancelled or closed). Only a response
        that carries an event asks first whether the client is still there: the question is a round
        trip to the server (in a profile of 48 tiny streams, asked before every send, it took 29% of the
        stream model's loop, more than the sends), and a chunk's bare end flag needs no answer."""
        try:
            if response is not None and sender.is_cancelled():
                return False
            sender.send(response, flags=flags)
            return True
        except Exception:  # noqa: BLE001 - pb_utils raises its own TritonModelException: the stream is gone
            return False
