"""Live audio on the real server (tiny export): the streaming model, the client's stream, the CLI.

A conversation is made of the recorded sentences with known pauses between them; the truth is
where each sentence's samples are.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile
import tritonclient.grpc as grpcclient

from ser_triton.client import live_input, timeline
from ser_triton.client.library import ClientError, SERClient
from ser_triton.core import contract
from ser_triton.export.refresh import refresh
from ser_triton.serving.steps.segmentation import SegmentationRules
from tests.conftest import REPO_ROOT, start_server
from tests.server_helpers import descendants, end, eventually, free_ports, start_launcher

pytestmark = pytest.mark.server
RATE = contract.SAMPLE_RATE


def seconds(value: float) -> int:
    return round(value * RATE)


def joined(parts) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentences (arrays) and pauses (seconds) in a row; where each sentence is."""
    pieces, truth, position = [], [], 0
    for part in parts:
        piece = part if isinstance(part, np.ndarray) else np.zeros(seconds(part), np.float32)
        if isinstance(part, np.ndarray):
            truth.append((position, position + piece.size))
        pieces.append(piece)
        position += piece.size
    return np.concatenate(pieces), truth


@pytest.fixture(scope="module")
def conversation(sentences):
    return joined([1.2, *[p for s in sentences for p in (s, 1.5)]])


def chunked(audio: np.ndarray, size: int):
    return [audio[i:i + size] for i in range(0, audio.size, size)]


def events_of(server_or_url, chunks, rate: int = RATE, segmentation: dict | None = None) -> list:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.grpc_url
    with SERClient(url, timeout=60) as client:
        return list(client.stream(chunks, rate, segmentation=segmentation))


def shape(events) -> list[tuple]:
    return [(e.event, e.start_sample, e.end_sample) for e in events]


def test_any_chunking_gives_the_same_events(tiny_server, conversation):
    audio, _ = conversation
    random = np.random.default_rng(3)
    cuts = np.cumsum(random.integers(seconds(0.01), seconds(1.5), 200))
    chunkings = {"20 ms": chunked(audio, seconds(0.02)), "100 ms": chunked(audio, seconds(0.1)),
                 "1 s": chunked(audio, RATE), "whole": [audio],
                 "random": np.split(audio, cuts[cuts < audio.size])}
    found = {name: events_of(tiny_server, chunks) for name, chunks in chunkings.items()}
    reference = found["100 ms"]
    assert [e.event for e in reference] == ["speech_start", "utterance"] * 4
    for name, events in found.items():
        assert shape(events) == shape(reference), name
        for got, want in zip(events, reference):
            if want.probabilities is not None:
                np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()),
                                           atol=1e-5, err_msg=name)
                assert got.transcript == want.transcript and got.label == want.label


def test_each_utterance_is_the_answer_for_its_span_alone(tiny_server, conversation):
    audio, _ = conversation
    utterances = [e for e in events_of(tiny_server, chunked(audio, seconds(0.1))) if e.event == "utterance"]
    with SERClient(tiny_server.grpc_url) as client:
        for event in utterances:
            alone = client.classify(audio[event.start_sample:event.end_sample], sample_rate=RATE)
            np.testing.assert_allclose(list(event.probabilities.values()), list(alone.probabilities.values()),
                                       atol=1e-4)
            assert event.transcript == alone.transcript


def test_streams_batched_together_each_get_the_events_they_get_alone(tiny_server, conversation):
    """Triton hands the stream model chunks of several streams in one batch, whose VAD windows it
    scores together (one Silero run per step for all of them): each stream still gets the events it
    gets alone. Eight streams send as fast as they can, in chunks of different sizes, so that batches
    form (the model's own statistics show them)."""
    audio, _ = conversation
    alone = events_of(tiny_server, chunked(audio, seconds(0.1)))
    sizes = [0.02, 0.03, 0.05, 0.07, 0.1, 0.25, 0.5, 1.0]
    with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:
        before = client.get_inference_statistics(contract.STREAM).model_stats[0]
        results = [[] for _ in sizes]
        streams = [threading.Thread(target=lambda out, size: out.extend(events_of(tiny_server,
                                                                                  chunked(audio, seconds(size)))),
                                    args=(out, size)) for out, size in zip(results, sizes)]
        for thread in streams:
            thread.start()
        for thread in streams:
            thread.join(300)
        after = client.get_inference_statistics(contract.STREAM).model_stats[0]
    requests, executions = (after.inference_count - before.inference_count,
                            after.execution_count - before.execution_count)
    assert requests > executions, f"no batch of chunks formed ({requests} chunks in {executions} executions)"
    for size, events in zip(sizes, results):
        assert shape(events) == shape(alone), size
        for got, want in zip(events, alone):
            if want.probabilities is not None:
                np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()),
                                           atol=1e-5, err_msg=str(size))


def test_utterance_boundaries_fall_near_the_speech(tiny_server, conversation):
    audio, truth = conversation
    utterances = [e for e in events_of(tiny_server, [audio]) if e.event == "utterance"]
    assert len(utterances) == len(truth)
    for event, (start, stop) in zip(utterances, truth):
        assert start - seconds(0.35) <= event.start_sample <= start + seconds(0.1), (event, start)
        assert stop - seconds(0.1) <= event.end_sample <= stop + seconds(0.5), (event, stop)
        assert event.start == event.start_sample / RATE and round(event.start * RATE) == event.start_sample


def test_a_pause_inside_a_turn_does_not_end_it(tiny_server, sentences):
    audio, truth = joined([0.5, sentences[0], 0.3, sentences[1], 1.5])
    utterances = [e for e in events_of(tiny_server, [audio]) if e.event == "utterance"]
    assert len(utterances) == 1
    assert utterances[0].start_sample <= truth[0][0] and utterances[0].end_sample >= truth[1][1]


def test_each_answer_comes_once_its_pause_has_arrived_and_before_any_later_audio(tiny_server, conversation):
    """Live, an utterance's end is decided by the pause after it, from the audio alone: its answer
    needs the pause (pause_seconds past the speech as the VAD heard it) and nothing later, neither the
    next speech nor the end of the stream. The source (a microphone) holds before each next sentence,
    and before the end, until the answer has come; how soon it comes is the bench's to measure
    (bench/streaming.py), not a test's."""
    audio, truth = conversation
    rules = SegmentationRules()  # the export's defaults
    holds = [start for start, _ in truth[1:]] + [audio.size]
    handed, answered, changed = [0], [], threading.Condition()

    def microphone():
        position = 0
        for number, hold in enumerate(holds):
            for chunk in chunked(audio[position:hold], seconds(0.1)):
                handed[0] += chunk.size
                yield chunk
            position = hold
            with changed:  # a bound, not a timing check: without an answer the source goes on after it
                changed.wait_for(lambda: len(answered) > number, timeout=60)

    with SERClient(tiny_server.grpc_url) as client:
        for event in client.stream(microphone()):
            if event.event == "utterance":
                with changed:
                    answered.append((event, handed[0]))
                    changed.notify_all()
    assert len(answered) == len(truth) == len(holds)
    for (event, handed_then), hold in zip(answered, holds):
        decided_at = event.end_sample - rules.padding_samples + rules.pause_samples
        assert decided_at <= handed_then <= hold, (event, handed_then, hold)


def test_a_long_utterance_gives_interim_results(tiny_server, sentences):
    audio, _ = joined([0.5, *[p for s in sentences for p in (s, 0.25)], 1.5])
    events = events_of(tiny_server, chunked(audio, seconds(0.25)))
    interims = [e for e in events if e.event == "interim"]
    [utterance] = [e for e in events if e.event == "utterance"]
    assert utterance.end - utterance.start > 10
    assert len(interims) == int((utterance.end - utterance.start) // 5)
    with SERClient(tiny_server.grpc_url) as client:
        for number, interim in enumerate(interims, 1):  # each: the last 5 s of the utterance so far
            assert abs((interim.end - utterance.start) - 5 * number) < 0.05
            assert interim.start_sample == max(utterance.start_sample, interim.end_sample - seconds(5.0))
            alone = client.classify(audio[interim.start_sample:interim.end_sample], sample_rate=RATE)
            np.testing.assert_allclose(list(interim.probabilities.values()), list(alone.probabilities.values()),
                                       atol=1e-4)
    assert [e.event for e in events].index("utterance") > [e.event for e in events].index("interim")


def served_with(tiny_repository, tmp_path_factory, name: str, **deployment_changes):
    """A server of a copy of the tiny export whose deployment knobs are changed (export/refresh.py)."""
    copy = tmp_path_factory.mktemp(name) / "model_repository"
    shutil.copytree(tiny_repository, copy)
    refresh(copy, **deployment_changes)
    with start_server(copy) as server:
        yield server


@pytest.fixture(scope="module")
def one_at_a_time(tiny_repository, tmp_path_factory):
    """The tiny export whose stream model has one classification at the ensemble at a time."""
    yield from served_with(tiny_repository, tmp_path_factory, "one-at-a-time", stream_in_flight=1)


def test_a_stale_interim_is_dropped_and_counted_and_the_rest_answered_as_their_spans(one_at_a_time, sentences):
    """The whole long turn in one chunk: its first interim starts at once, the next waits for the one
    classification in flight, and the turn's end makes it stale: dropped, never classified, counted by the
    server; what does come is each span's own answer, the utterance last."""
    audio, _ = joined([0.5, *[p for s in sentences for p in (s, 0.25)], 1.5])
    before = stream_metrics(one_at_a_time, dropped=True)[2]
    events = events_of(one_at_a_time, [audio])
    [utterance] = [e for e in events if e.event == "utterance"]
    decided = int((utterance.end - utterance.start) // 5)  # the interims the segmenter decided
    interims = [e for e in events if e.event == "interim"]
    assert decided >= 2 and len(interims) == 1 and [e.event for e in events][-1] == "utterance"
    assert stream_metrics(one_at_a_time, dropped=True)[2] - before == decided - 1
    with SERClient(one_at_a_time.grpc_url) as client:
        for event in (*interims, utterance):
            alone = client.classify(audio[event.start_sample:event.end_sample], sample_rate=RATE)
            np.testing.assert_allclose(list(event.probabilities.values()), list(alone.probabilities.values()),
                                       atol=1e-4)


@pytest.fixture(scope="module")
def speculating(tiny_repository, tmp_path_factory):
    """The tiny export whose stream model classifies an utterance ahead once a pause in it lasts 0.15 s."""
    yield from served_with(tiny_repository, tmp_path_factory, "speculating", stream_speculate_seconds=0.15)


def speculation_metrics(server) -> dict[str, int]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    metric = rf'(?m)^{contract.SPECULATIONS_METRIC}{{model="{contract.STREAM}",outcome="(\w+)"}} (\S+)$'
    found = re.findall(metric, text)
    return {outcome: int(float(count)) for outcome, count in found}


def test_classifying_ahead_changes_no_event_and_counts_each_tentative_end(speculating, tiny_server, sentences):
    """A pause inside the first turn (0.3 s) and three turn changes: each turn's end is classified ahead
    and used, the inner pause's is dropped or wasted; the events and answers are those of a server that
    does not classify ahead. What the server did is its own count, against the segmenter run here."""
    from ser_triton.export.repository import vad_package_file
    from ser_triton.serving.steps.segmentation import Segmenter, SpeechDetector, Tentative, Withdrawn, vad_session

    audio, _ = joined([0.7, sentences[0], 0.3, sentences[1], 1.2, sentences[2], 1.0, sentences[3], 1.5])
    chunks = chunked(audio, seconds(0.1))
    segmenter = Segmenter(SpeechDetector(vad_session(vad_package_file())), SegmentationRules(), seconds(0.15))
    foreseen = [e for chunk in chunks for e in segmenter.feed(chunk)] + segmenter.finish()
    tentative, withdrawn = (sum(isinstance(e, kind) for e in foreseen) for kind in (Tentative, Withdrawn))
    before = speculation_metrics(speculating)
    ahead, plain = events_of(speculating, chunks), events_of(tiny_server, chunks)
    assert shape(ahead) == shape(plain)
    assert [e.event for e in plain if e.event != "interim"] == ["speech_start", "utterance"] * 3
    for got, want in zip(ahead, plain):
        assert (got.label, got.transcript, got.words) == (want.label, want.transcript, want.words)
        if want.probabilities is not None:
            np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-5)
    after = speculation_metrics(speculating)
    grown_by = {outcome: after.get(outcome, 0) - before.get(outcome, 0) for outcome in ("used", "dropped", "wasted")}
    assert withdrawn >= 1 and grown_by["used"] == tentative - withdrawn == 3
    assert grown_by["dropped"] + grown_by["wasted"] == withdrawn


def test_per_stream_rules_change_the_segmentation(tiny_server, sentences):
    audio, _ = joined([0.5, sentences[0], 1.0, sentences[1], 2.5])
    apart = [e for e in events_of(tiny_server, [audio]) if e.event == "utterance"]
    together = [e for e in events_of(tiny_server, [audio], segmentation={"pause_seconds": 2.0})
                if e.event == "utterance"]
    assert len(apart) == 2 and len(together) == 1
    with pytest.raises(ClientError, match="segmentation rule pause_seconds"):
        events_of(tiny_server, [audio], segmentation={"pause_seconds": -1})


def stream_metrics(server, dropped: bool = False) -> tuple:
    """The stream model's own count of its live streams, and of its ended ones by reason (its metrics);
    with `dropped`, also its count of dropped interims."""
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    [live] = re.findall(rf'(?m)^{contract.LIVE_STREAMS_METRIC}{{model="{contract.STREAM}"}} (\S+)$', text)
    ended = re.findall(rf'(?m)^{contract.ENDED_STREAMS_METRIC}{{model="{contract.STREAM}",reason="(\w+)"}} (\S+)$',
                       text)
    found = int(float(live)), {reason: int(float(count)) for reason, count in ended}
    if not dropped:
        return found
    [interims] = re.findall(rf'(?m)^{contract.DROPPED_INTERIMS_METRIC}{{model="{contract.STREAM}"}} (\S+)$', text)
    return (*found, int(float(interims)))


def grown(before: dict, after: dict) -> dict:
    return {reason: after[reason] - before.get(reason, 0) for reason in after if after[reason] != before.get(reason, 0)}


def test_bad_chunks_end_their_stream_and_no_other(tiny_server, conversation):
    """A good stream stays open while four bad ones come and go: it has had its first answer before
    they start (the server had its first chunks), and sends the rest of its audio only after they
    have ended; its answers are those of the same audio streamed alone, the bad ones end with theirs."""
    audio, truth = conversation
    alone = events_of(tiny_server, chunked(audio, seconds(0.1)))
    seen, lock = [], threading.Lock()  # what the clients saw, in order
    first_answer, bad_ended = threading.Event(), threading.Event()
    outcome = {}

    def microphone():
        held = truth[0][1] + seconds(1.0)  # past the first sentence and its pause: its answer can come
        yield from chunked(audio[:held], seconds(0.1))
        bad_ended.wait(120)  # a bound: the bad streams end long before
        yield from chunked(audio[held:], seconds(0.1))

    def good():
        with SERClient(tiny_server.grpc_url, timeout=60) as client:
            outcome["good"] = []
            for event in client.stream(microphone()):
                outcome["good"].append(event)
                with lock:
                    seen.append(("good", event.event))
                if event.event == "utterance":
                    first_answer.set()

    thread = threading.Thread(target=good)
    thread.start()
    try:
        live, before, after = bad_streams_meanwhile(tiny_server, audio, first_answer, seen, lock)
    finally:
        bad_ended.set()
        thread.join(120)
    # the server's own count: four streams ended in error while the good one was live (not ended)
    assert grown(before, after) == {"error": 4} and live >= 1
    bad_at = [number for number, (who, _) in enumerate(seen) if who == "bad"]
    good_at = [number for number, (who, _) in enumerate(seen) if who == "good"]
    assert good_at[0] < bad_at[0] and bad_at[-1] < good_at[-1], seen  # interleaved: good, bad..., good
    assert shape(outcome["good"]) == shape(alone) and [e.event for e in alone] == ["speech_start", "utterance"] * 4
    for got, want in zip(outcome["good"], alone):  # the same answers, to float32's precision
        assert (got.label, got.transcript) == (want.label, want.transcript)
        if want.probabilities is not None:
            np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-6)


def bad_streams_meanwhile(server, audio, first_answer: threading.Event, seen: list, lock) -> tuple:
    """Once the good stream has had its first answer: four streams that each end with their bad chunk's
    error; the live streams after them and the ended streams' counts before and after (stream_metrics)."""
    assert first_answer.wait(60)
    _, before = stream_metrics(server)
    url = server.grpc_url
    bad = [("NaN", lambda: events_of(url, [audio[:RATE], np.full(RATE, np.nan, np.float32)])),
           ("empty", lambda: raw_stream(url, [(audio[:RATE], RATE, False), (audio[:0], RATE, False)])),
           ("8000 Hz", lambda: raw_stream(url, [(audio[:RATE], 8000, False)])),
           ("at most 10 s", lambda: raw_stream(url, [(np.zeros(seconds(11), np.float32), RATE, False)]))]
    for reason, stream in bad:
        with pytest.raises(ClientError, match=reason):
            stream()
        with lock:
            seen.append(("bad", reason))
    live, after = stream_metrics(server)
    return live, before, after


def raw_stream(url: str, chunks) -> list:
    """Chunks sent as they are (no client checks): (samples, rate, end) each; ClientError on an error."""
    answers, done = [], threading.Event()

    def callback(result=None, error=None):
        answers.append(error or result)
        done.set()

    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback)
        for number, (audio, rate, last) in enumerate(chunks):
            chunk = grpcclient.InferInput(contract.CHUNK, [1, audio.size], "FP32")
            chunk.set_data_from_numpy(audio[None].astype(np.float32))
            rate_input = grpcclient.InferInput(contract.CHUNK_RATE, [1, 1], "INT32")
            rate_input.set_data_from_numpy(np.array([[rate]], np.int32))
            client.async_stream_infer(contract.STREAM, [chunk, rate_input], request_id=str(number), sequence_id=77,
                                      sequence_start=number == 0, sequence_end=last,
                                      enable_empty_final_response=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(isinstance(a, Exception) for a in answers):
            done.wait(0.2)
        client.stop_stream()
    errors = [a for a in answers if isinstance(a, Exception)]
    if errors:
        raise ClientError(errors[0].message())
    return answers


@pytest.fixture(scope="module")
def bounded_server(tiny_repository, tmp_path_factory):
    """The tiny export with room for 2 streams, each ended after 1.5 s without audio."""
    yield from served_with(tiny_repository, tmp_path_factory, "bounded", max_streams=2, stream_idle_seconds=1.5)


class Held:
    """A stream that sends `before`, then waits for `go` before sending `after`; its events or error."""

    def __init__(self, server, before, after=(), go: threading.Event | None = None):
        self.go, self.events, self.error, self.sent = go or threading.Event(), [], None, threading.Event()
        self.thread = threading.Thread(target=self._run, args=(server, before, after))
        self.thread.start()

    def _chunks(self, before, after):
        yield from before
        self.sent.set()
        self.go.wait(60)
        yield from after

    def _run(self, server, before, after):
        try:
            self.events = events_of(server, self._chunks(before, after))
        except ClientError as error:
            self.error = error


def test_past_the_stream_limit_a_new_stream_is_refused_and_the_others_go_on(bounded_server, conversation):
    audio, _ = conversation
    go = threading.Event()
    held = [Held(bounded_server, chunked(audio[:seconds(3)], seconds(0.1)), chunked(audio[seconds(3):], RATE), go)
            for _ in range(2)]
    for stream in held:
        assert stream.sent.wait(30)
    assert eventually(lambda: stream_metrics(bounded_server)[0] == 2)  # the two streams are live on the server
    _, before = stream_metrics(bounded_server)
    with pytest.raises(ClientError, match="limit of 2 live streams"):
        events_of(bounded_server, [audio[:RATE]])
    assert grown(before, stream_metrics(bounded_server)[1]) == {"refused": 1}
    go.set()
    for stream in held:
        stream.thread.join(120)
        assert stream.error is None and [e.event for e in stream.events] == ["speech_start", "utterance"] * 4


def test_an_idle_stream_is_ended_and_its_state_freed(bounded_server, conversation):
    audio, _ = conversation
    go = threading.Event()
    idle = Held(bounded_server, [audio[:RATE]], [audio[RATE:2 * RATE]], go)
    assert idle.sent.wait(30)
    time.sleep(3.5)  # past the 1.5 s idle limit, and the sweep
    go.set()
    idle.thread.join(60)
    assert idle.error is not None  # its late chunk is refused, by the model or by Triton's own sequence batcher
    # the state was freed: both of the server's two stream slots are free again
    results = [Held(bounded_server, [audio]) for _ in range(2)]
    for stream in results:
        stream.go.set()
        stream.thread.join(120)
        assert stream.error is None and len(stream.events) == 8


def test_a_client_that_vanishes_mid_utterance_is_ended_and_its_state_freed(bounded_server, sentences):
    """ser-infer follows a microphone (stdin, which blocks between chunks, paced as it speaks) and is
    killed mid-utterance: the server had its chunks (it confirmed the speech), the turn had not ended
    and the end flag was never sent (stdin never closed). The server ends the stream by its idle rule
    and frees it: its own count of live streams falls back, its counter says idle (not end), and both
    of its two stream slots take new streams again."""
    turn, truth = joined([0.5, sentences[0], 0.2, sentences[1], 0.2, sentences[2], 1.0])  # one long turn
    assert eventually(lambda: stream_metrics(bounded_server)[0] == 0)  # the other tests' streams have gone
    _, before = stream_metrics(bounded_server)
    client = cli("--stream", "-", "--json", "--url", bounded_server.grpc_url, stdin=subprocess.PIPE, text=False)
    pcm = (np.clip(turn, -1, 1) * 32767).astype("<i2").tobytes()
    written, step = [0], seconds(0.1) * 2

    def microphone():
        try:
            client.stdin.write(wav_header(RATE))
            while written[0] < len(pcm):
                client.stdin.write(pcm[written[0]:written[0] + step])
                client.stdin.flush()
                written[0] += step
                time.sleep(0.1)
        except (BrokenPipeError, ValueError):  # the client has gone
            pass

    speaking, heard = threading.Thread(target=microphone), []
    listening = threading.Thread(target=lambda: heard.append(client.stdout.readline()))
    speaking.start()
    listening.start()
    try:
        listening.join(60)
        client.kill()  # mid-utterance (below): no end flag, no goodbye
        at_kill = written[0] // 2  # samples written to it: at most what the server had
    finally:
        client.kill()
        client.wait(30)
        speaking.join(30)
    assert heard and json.loads(heard[0])["event"] == "speech_start", (heard, client.stderr.read())
    assert at_kill < truth[-1][1], "the turn was over before the speech was confirmed"
    # the stream stays open until the idle rule ends it: then it is freed, and counted as idle, not as ended
    assert eventually(lambda: stream_metrics(bounded_server)[0] == 0), "the vanished client's stream is still live"
    assert grown(before, stream_metrics(bounded_server)[1]) == {"idle": 1}
    streams = [Held(bounded_server, [turn]) for _ in range(2)]
    for stream in streams:
        stream.go.set()
        stream.thread.join(120)
        assert stream.error is None
        assert [e.event for e in stream.events if e.event != "interim"] == ["speech_start", "utterance"]


def stub_rss_mib(server, model: str) -> float:
    [pid] = [pid for pid, name in server.stubs().items() if name == model]
    line = next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_memory_stays_flat_over_many_streams(tiny_server, conversation):
    audio, _ = conversation
    clip = audio[:seconds(6)]
    for _ in range(5):
        events_of(tiny_server, [clip])
    before = stub_rss_mib(tiny_server, contract.STREAM)
    for _ in range(40):
        events_of(tiny_server, chunked(clip, RATE))
    grown = stub_rss_mib(tiny_server, contract.STREAM) - before
    assert grown < 20, f"the stream model grew by {grown:.0f} MiB over 40 streams"


@pytest.fixture(scope="module")
def two_replicas(tiny_repository, tmp_path_factory):
    ports = free_ports()
    launcher, _ = start_launcher(tiny_repository, ports, "--replicas", "2", "--log-file",
                                 str(tmp_path_factory.mktemp("logs") / "tritonserver.log"))
    family = descendants(launcher.pid)
    yield f"127.0.0.1:{ports['grpc']}", [pid for pid, name in family.items() if name == "tritonserver"]
    launcher.terminate()
    launcher.wait(60)
    end(launcher, descendants(launcher.pid) | family)


def stream_executions(pid: int) -> int:
    """The stream model's executions on the server with this pid, from its own statistics."""
    arguments = open(f"/proc/{pid}/cmdline").read().split("\0")
    port = next(a.split("=")[1] for a in arguments if a.startswith("--grpc-port="))
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
        stats = client.get_inference_statistics(contract.STREAM).model_stats[0]
    return stats.inference_stats.success.count


def test_streams_spread_over_replicas_each_staying_on_one(two_replicas, conversation):
    url, servers = two_replicas
    audio, _ = conversation
    before = [stream_executions(pid) for pid in servers]
    streams = [threading.Thread(target=lambda out: out.extend(events_of(url, chunked(audio, seconds(0.5)))),
                                args=(out,)) for out in [[] for _ in range(6)]]
    results = [thread._args[0] for thread in streams]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join(180)
    # a chunk on another replica than its stream's first would be refused there ("not open")
    assert all([e.event for e in events] == ["speech_start", "utterance"] * 4 for events in results)
    served = [stream_executions(pid) - b for pid, b in zip(servers, before)]
    assert all(count > 0 for count in served), served


def test_a_stream_whose_replica_dies_gets_an_error_not_a_hang(two_replicas, conversation, tmp_path):
    url, servers = two_replicas
    audio, _ = conversation
    path = tmp_path / "call.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    outcomes = []

    def live():
        try:
            with SERClient(url, timeout=10) as client:
                outcomes.append(list(client.stream_file(path, realtime=True)))
        except ClientError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=live) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    os.kill(servers[0], signal.SIGKILL)
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert any(isinstance(o, ClientError) for o in outcomes), outcomes
    for outcome in outcomes:
        assert isinstance(outcome, ClientError) or [e.event for e in outcome] == ["speech_start", "utterance"] * 4


def wav_header(rate: int, channels: int = 1, bits: int = 16, code: int = 1) -> bytes:
    """A WAV header of unknown length, as arecord and ffmpeg write to a pipe."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", code, channels, rate, rate * block, block, bits)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt \
        + b"data" + struct.pack("<I", 0xFFFFFFFF)


def test_the_wav_stream_reader_takes_pcm_and_float_of_unknown_length():
    import io
    audio = (np.sin(np.arange(2000) / 7) * 20000).astype("<i2")
    stream = io.BytesIO(wav_header(8000) + audio.tobytes())
    fmt = live_input.read_wav_header(stream)
    assert (fmt.rate, fmt.channels) == (8000, 1)
    chunks = list(live_input.pcm_chunks(stream, fmt, 0.1))
    assert [c.shape[0] for c in chunks] == [800, 800, 400]
    np.testing.assert_array_equal(np.concatenate(chunks)[:, 0], audio)
    stereo = np.zeros((100, 2), "<f4")
    fmt = live_input.read_wav_header(io.BytesIO(wav_header(16000, 2, 32, 3) + stereo.tobytes()))
    assert fmt.channels == 2 and fmt.dtype == np.dtype("<f4")
    with pytest.raises(ValueError, match="not a WAV stream"):
        live_input.read_wav_header(io.BytesIO(b"not audio at all"))


def cli(*arguments, text=True, **popen):
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "client" / "infer.py"), *arguments],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, **popen)


def test_the_cli_follows_stdin_as_it_arrives(tiny_server, conversation):
    """A WAV stream of unknown length on stdin: events print before the audio has ended."""
    audio, truth = conversation
    process = cli("--stream", "-", "--json", "--url", tiny_server.grpc_url, "--chunk-ms", "100",
                  stdin=subprocess.PIPE, text=False)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    process.stdin.write(wav_header(RATE))
    process.stdin.flush()
    first_line = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()))
    reader.start()
    sent = 0
    step = seconds(0.25) * 2
    while sent < len(pcm) and reader.is_alive():
        process.stdin.write(pcm[sent:sent + step])
        process.stdin.flush()
        sent += step
        time.sleep(0.05)
    reader.join(30)
    assert sent < len(pcm), "no event before the whole audio was written"
    event = json.loads(first_line[0])
    assert event["event"] == "speech_start" and event["start_sample"] == round(event["start"] * RATE)
    process.stdin.write(pcm[sent:])
    process.stdin.close()
    rest = [json.loads(line) for line in process.stdout.read().decode().splitlines()]
    assert process.wait(60) == 0, process.stderr.read().decode()
    utterances = [e for e in rest if e["event"] == "utterance"]
    assert len(utterances) == 4 and set(utterances[0]) >= {"event", "start", "end", "label", "probabilities",
                                                            "transcript"}
    assert abs(utterances[0]["end"] - truth[0][1] / RATE) < 0.6


def test_the_cli_reads_raw_pcm_at_any_rate(tiny_server, conversation):
    audio, _ = conversation
    import soxr
    at_8k = soxr.resample(audio, RATE, 8000)
    pcm = (np.clip(at_8k, -1, 1) * 32767).astype("<i2").tobytes()
    process = cli("--stream", "-", "--raw", "8000", "--url", tiny_server.grpc_url, stdin=subprocess.PIPE, text=False)
    out, err = process.communicate(pcm, timeout=120)
    assert process.returncode == 0, err.decode()
    assert sum(" utterance " in line for line in out.decode().splitlines()) == 4


def test_a_long_recording_is_cut_where_the_speaker_pauses(tiny_server, sentences, tmp_path):
    audio, truth = joined([1.0, *[p for s in sentences * 2 for p in (s, 1.5)]])  # ~37 s
    path = tmp_path / "long.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    png, vtt = tmp_path / "timeline.png", tmp_path / "subtitles.vtt"
    done = cli(str(path), "--json", "--url", tiny_server.grpc_url, "--timeline", str(png), "--subtitles", str(vtt))
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    result = json.loads(out)
    assert len(result["segments"]) == len(truth) == 8
    for segment, (start, stop) in zip(result["segments"], truth):
        assert start / RATE - 0.35 <= segment["start"] <= start / RATE + 0.1
    speech = sum(s["end"] - s["start"] for s in result["segments"])
    weighted = {label: sum((s["end"] - s["start"]) * s["probabilities"][label] for s in result["segments"]) / speech
                for label in contract.LABELS}
    np.testing.assert_allclose(list(result["probabilities"].values()), list(weighted.values()), atol=1e-6)
    assert result["duration"] == pytest.approx(audio.size / RATE)
    import matplotlib.image
    picture = matplotlib.image.imread(png)
    assert picture.shape[0] > 300 and picture.shape[1] > 600
    text = vtt.read_text()
    assert text.startswith("WEBVTT\n")
    cues = [line for line in text.splitlines() if " --> " in line]
    assert len(cues) == 8
    first = result["segments"][0]
    assert cues[0] == f"{timeline.vtt_time(first['start'])} --> {timeline.vtt_time(first['end'])}"
    assert f"[{first['label']} {first['probabilities'][first['label']]:.2f}]" in text
    fixed = cli(str(path), "--json", "--url", tiny_server.grpc_url, "--segmenter", "fixed")
    out, err = fixed.communicate(timeout=120)
    assert fixed.returncode == 0, err
    assert [(s["start"], s["end"]) for s in json.loads(out)["segments"]] == [(0.0, audio.size / RATE / 2),
                                                                            (audio.size / RATE / 2, audio.size / RATE)]


def test_a_recording_without_speech_says_so(tiny_server, tmp_path):
    path = tmp_path / "hum.wav"
    soundfile.write(path, np.zeros(seconds(25), np.float32), RATE)
    done = cli(str(path), "--url", tiny_server.grpc_url)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 1 and "no speech found" in err and "Traceback" not in err
