"""serving.steps.segmentation on real speech: the recorded sentences, joined by known pauses.

The truth is where each sentence's samples are: its first and last sample above 1% of its peak
(espeak's output is clean), placed in a stream with silence or low noise between sentences.
"""


import numpy as np
import pytest

from ser_triton.core.contract import MAX_SECONDS, SAMPLE_RATE
from ser_triton.export.repository import vad_package_file
from ser_triton.serving.steps import segmentation
from ser_triton.serving.steps.segmentation import (WINDOW, Interim, RuleError, SegmentationRules, Segmenter,
                                                   SpeechDetector, SpeechStart, Tentative, Utterance, Withdrawn,
                                                   segment, vad_session)

SESSION = vad_session(vad_package_file())
"""Silero VAD from the installed package, as the export copies it into the stream model's folder."""
RULES = SegmentationRules()
PAD = RULES.padding_samples
MS = SAMPLE_RATE // 1000


def seconds(value: float) -> int:
    return round(value * SAMPLE_RATE)


class Stream:
    """Sentences joined by gaps; `speech` holds each sentence's (start, end) in the stream."""

    def __init__(self, parts: list, noise: float = 0.0, seed: int = 0):
        pieces, self.speech, position = [], [], 0
        random = np.random.default_rng(seed)
        for part in parts:
            if isinstance(part, np.ndarray):
                pieces.append(part)
                self.speech.append((position, position + part.size))
                position += part.size
            else:
                gap = (noise * random.standard_normal(seconds(part))).astype(np.float32)
                pieces.append(gap)
                position += gap.size
        self.samples = np.concatenate(pieces)


def conversation(sentences, gap=1.5, noise=0.0) -> Stream:
    """Four turns, each sentence one turn, with `gap` seconds between them."""
    return Stream([gap, *[part for s in sentences for part in (s, gap)]], noise)


def long_turn(sentences, count=12, gap=0.2) -> Stream:
    """One speaker talking on past the longest utterance, with short breaths between sentences."""
    parts = [1.0]
    for i in range(count):
        parts += [sentences[i % 4], gap]
    return Stream(parts + [1.0])


def stream(samples: np.ndarray, chunks, rules=RULES, tentative_after=None) -> list:
    """Every event of a stream fed in chunks of these sizes (cycled), then finished."""
    segmenter, events, position, i = Segmenter(SpeechDetector(SESSION), rules, tentative_after), [], 0, 0
    while position < samples.size:
        size = chunks[i % len(chunks)]
        events += segmenter.feed(samples[position:position + size])
        position, i = position + size, i + 1
    return events + segmenter.finish()


def chunkings(total: int) -> dict:
    random = np.random.default_rng(7)
    return {"20 ms": [20 * MS], "100 ms": [100 * MS], "1 s": [SAMPLE_RATE], "whole": [total],
            "window": [WINDOW], "random": list(random.integers(1, 3 * SAMPLE_RATE, size=500))}


def utterances(events) -> list:
    return [e for e in events if isinstance(e, Utterance)]


# --- the detector


def test_the_vad_model_takes_a_window_with_context_a_state_and_the_rate():
    session = SESSION
    inputs = {i.name: (i.shape, i.type) for i in session.get_inputs()}
    assert inputs == {"input": ([None, None], "tensor(float)"), "state": ([2, None, 128], "tensor(float)"),
                      "sr": ([], "tensor(int64)")}
    assert [o.name for o in session.get_outputs()] == ["output", "stateN"]


def test_probabilities_are_those_of_the_packages_own_wrappers(sentences):
    """silero_vad's OnnxWrapper (same ONNX file, torch around it) and its batched sequence model
    (another export of the network, which states bit-exact agreement) give the same floats."""
    import torch  # the test extra installs it (with silero-vad's wrappers): no test may skip for want of it
    from silero_vad import load_silero_vad
    from silero_vad.utils_vad import OnnxWrapper


    samples = np.concatenate([*sentences, np.zeros(1000, np.float32)])  # ends in a partial window
    detector = SpeechDetector(SESSION)
    ours = np.concatenate([detector.feed(samples), detector.flush()])
    assert ours.size == -(-samples.size // WINDOW)
    wrapper = OnnxWrapper(str(vad_package_file()), force_onnx_cpu=True)
    assert np.array_equal(ours, wrapper.audio_forward(torch.from_numpy(samples), SAMPLE_RATE).numpy().ravel())
    assert np.array_equal(ours, load_silero_vad(sequence=True).audio_forward(samples))


def test_probabilities_are_identical_for_any_chunking(sentences):
    samples = conversation(sentences[:2], gap=0.5).samples[:seconds(5.5) + 77]
    whole = SpeechDetector(SESSION)
    expected = np.concatenate([whole.feed(samples), whole.flush()])
    for name, sizes in {**chunkings(samples.size), "1 sample, then odd sizes": [1, 511, 513, 3, 1000]}.items():
        detector, got, position, i = SpeechDetector(SESSION), [], 0, 0
        while position < samples.size:
            got.append(detector.feed(samples[position:position + sizes[i % len(sizes)]]))
            assert detector.pending < WINDOW
            position, i = position + sizes[i % len(sizes)], i + 1
        got.append(detector.flush())
        assert np.array_equal(np.concatenate(got), expected), name


def test_streams_fed_together_get_the_probabilities_and_events_they_get_alone(sentences):
    """The stream model scores the VAD windows of all the streams in one Triton batch together (one
    model run per step, a row per stream): each stream's probabilities are its own (bit for bit where
    ONNX Runtime computes a row of a batch as it computes it alone, as on the machines tried; within
    1e-6 asserted), and so are its events, whatever the other streams are doing (silence, speech, chunks
    of other sizes, a stream that joins late or stops sending)."""
    samples = [conversation(sentences[:2], gap=0.7).samples, conversation(sentences[2:], gap=1.1, noise=0.01).samples,
               np.zeros(seconds(6), np.float32), long_turn(sentences, count=3).samples]
    sizes = [[1600], [320, 5000, 777], [16000], [512, 1]]
    joins = [0, 0, 3, 7]  # the round in which each stream sends its first chunk
    alone = [stream(audio, size) for audio, size in zip(samples, sizes)]
    segmenters = [Segmenter(SpeechDetector(SESSION)) for _ in samples]
    together, positions = [[] for _ in samples], [0] * len(samples)
    for round_ in range(10_000):
        rows = [row for row, audio in enumerate(samples) if round_ >= joins[row] and positions[row] < audio.size]
        if not rows:
            break
        chunks = []
        for row in rows:
            size = sizes[row][(round_ - joins[row]) % len(sizes[row])]
            chunks.append(samples[row][positions[row]:positions[row] + size])
            positions[row] += size
        for row, events in zip(rows, segmentation.feed_together([segmenters[row] for row in rows], chunks)):
            together[row] += events
    for row, segmenter in enumerate(segmenters):
        together[row] += segmenter.finish()
        assert together[row] == alone[row], row
    assert [len(utterances(events)) for events in alone[:2]] == [2, 2] and not alone[2]
    detectors = [SpeechDetector(SESSION) for _ in samples]
    scored = segmentation.score_together(detectors, [d._inputs(audio) for d, audio in zip(detectors, samples)])
    for audio, probabilities in zip(samples, scored):
        np.testing.assert_allclose(probabilities, SpeechDetector(SESSION).feed(audio), rtol=0, atol=1e-6)
    again = Segmenter(SpeechDetector(SESSION))
    with pytest.raises(ValueError, match="one stream twice"):
        segmentation.feed_together([again, again], [samples[0][:512]] * 2)


def test_speech_scores_high_and_silence_low(sentences):
    talk = conversation(sentences, noise=0.003)
    probabilities = SpeechDetector(SESSION).feed(talk.samples)
    in_speech, near_speech = (np.zeros(probabilities.size, bool) for _ in range(2))
    margin = seconds(0.3) // WINDOW  # the model's tail after speech is longer in noise
    for start, end in talk.speech:
        in_speech[start // WINDOW:end // WINDOW] = True
        near_speech[start // WINDOW - margin:end // WINDOW + margin] = True
    assert probabilities[in_speech].mean() > 0.8
    assert probabilities[~near_speech].mean() < 0.1 and probabilities[~near_speech].max() < RULES.negative


def test_the_detector_refuses_what_is_not_mono_float_audio():
    with pytest.raises(ValueError, match="int16"):
        SpeechDetector(SESSION).feed(np.zeros(512, np.int16))
    with pytest.raises(ValueError, match="one-dimensional"):
        SpeechDetector(SESSION).feed(np.zeros((512, 2), np.float32))
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        segment(np.array([0.0, np.nan, 0.1], np.float32), SpeechDetector(SESSION))


def test_audio_is_scanned_for_nan_once_where_it_enters(sentences, monkeypatch):
    """segment() scans a recording once; a live chunk is scanned by the stream model where it
    arrives (tests/test_stream.py), so neither the segmenter nor the detector scans it again."""
    scanned = []
    isfinite = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda values: scanned.append(np.size(values)) or isfinite(values))
    chunk = sentences[0][:seconds(1.0)]
    Segmenter(SpeechDetector(SESSION)).feed(chunk)
    assert scanned == []
    segment(sentences[0], SpeechDetector(SESSION))
    assert scanned == [sentences[0].size]


# --- the rules


def test_rule_defaults_fit_the_server_and_decide_an_end_within_a_second_of_audio_after_the_speech():
    assert RULES.threshold == 0.5 and RULES.negative == pytest.approx(0.35)
    assert RULES.max_seconds <= MAX_SECONDS
    assert RULES.padding_seconds < RULES.pause_seconds
    assert RULES.pause_samples % WINDOW == 0  # the end is decided exactly `pause` after speech stops
    assert RULES.pause_seconds + WINDOW / SAMPLE_RATE < 1.0


def test_rules_from_a_dict_and_keywords():
    rules = SegmentationRules.from_dict({"pause_seconds": 1.0, "interim_seconds": None}, threshold=0.6)
    assert (rules.pause_seconds, rules.interim_seconds, rules.threshold) == (1.0, None, 0.6)
    assert rules.negative == pytest.approx(0.45)  # follows the threshold unless set
    assert SegmentationRules.from_dict(negative_threshold=0.2).negative == 0.2
    assert rules.pause_samples == SAMPLE_RATE


@pytest.mark.parametrize("values, message", [
    ({"pause": 1.0}, r"unknown segmentation rule\(s\) 'pause': the rules are threshold, negative_threshold"),
    ({"threshold": 1.0}, r"threshold=1.0 is out of range: allowed 0 < threshold < 1"),
    ({"threshold": "high"}, r"threshold: must be a finite number, not 'high'"),
    ({"pause_seconds": True}, r"pause_seconds: must be a finite number, not True"),
    ({"max_seconds": 4000.0}, r"max_seconds=4000.0 is out of range: allowed 1 <= max_seconds <= 3600"),
    ({"padding_seconds": 0.7}, r"padding_seconds=0.7 .* 0 <= padding_seconds < 0.64 \(pause_seconds\)"),
    ({"negative_threshold": 0.6}, r"negative_threshold=0.6 .* 0 < negative_threshold <= 0.5 \(threshold\)"),
    ({"split_search_seconds": 12.0}, r"split_search_seconds=12.0 .* <= 10 \(max_seconds / 2\)"),
    ({"interim_seconds": 0}, r"interim_seconds=0 is out of range: allowed 0.032 <= interim_seconds"),
    ({"min_speech_seconds": float("nan")}, r"min_speech_seconds: must be a finite number, not nan"),
    ({"interim_window_seconds": 0.01}, r"interim_window_seconds=0.01 .* 0.032 <= interim_window_seconds <= 3600"),
])
def test_a_bad_rule_is_named_with_its_allowed_range(values, message):
    with pytest.raises(RuleError, match=message):
        SegmentationRules.from_dict(values)


def test_the_interim_window_may_outlast_the_longest_utterance():
    """Short utterances with the default 5 s window (a stream's own rules, as the WebSocket test's): valid,
    each interim then covers all of its utterance so far."""
    rules = SegmentationRules.from_dict(max_seconds=1.0, split_search_seconds=0.5, interim_seconds=0.064)
    assert rules.interim_window_seconds == 5.0 and rules.interim_window_samples > rules.max_samples


# --- utterances of a conversation


# In white noise at -50 dBFS the model hears a sentence's last sound go on for ~0.25 s longer.
@pytest.mark.parametrize("noise, within", [(0.0, 0.25), (0.003, 0.4)], ids=["silence", "low noise"])
def test_each_turn_is_one_utterance_with_its_boundaries_close_to_the_truth(sentences, noise, within):
    talk = conversation(sentences, noise=noise)
    found = segment(talk.samples, SpeechDetector(SESSION))
    assert len(found) == len(talk.speech)
    for utterance, (start, end) in zip(found, talk.speech):
        assert utterance.start <= start and utterance.end >= end  # no speech is cut off
        assert start - utterance.start <= seconds(within) and utterance.end - end <= seconds(within)
        assert np.array_equal(utterance.samples, talk.samples[utterance.start:utterance.end])
        assert utterance.start_seconds == utterance.start / SAMPLE_RATE


def test_a_short_pause_inside_a_turn_does_not_split_it_but_a_turn_change_does(sentences):
    joined = Stream([1.0, sentences[1], 0.3, sentences[2], 1.0])
    [utterance] = segment(joined.samples, SpeechDetector(SESSION))
    assert utterance.start <= joined.speech[0][0] and utterance.end >= joined.speech[1][1]
    turns = Stream([1.0, sentences[1], 1.0, sentences[2], 1.0])
    assert len(segment(turns.samples, SpeechDetector(SESSION))) == 2


class Scripted:
    """A detector that gives these probabilities, one per window, whatever the samples."""

    def __init__(self, probabilities):
        self.probabilities = np.asarray(probabilities, np.float32)
        self.reset()

    def reset(self):
        self.windows = self.pending = 0

    def feed(self, samples):
        self.pending += len(samples)
        count, self.pending = divmod(self.pending, WINDOW)
        self.windows += count
        return self.probabilities[self.windows - count:self.windows]

    def flush(self):
        self.windows, pending, self.pending = self.windows + bool(self.pending), self.pending, 0
        return self.probabilities[self.windows - 1:self.windows] if pending else self.probabilities[:0]


def test_only_windows_below_the_negative_threshold_make_a_pause():
    """Hysteresis: a window between the two thresholds (a soft word ending, a murmur) neither
    starts a pause nor stops one; speech resumes only at the threshold."""
    pause = RULES.pause_samples // WINDOW
    script = [0.0] * 10 + [0.9] * 20 + [0.4] * (pause + 5) + [0.9] * 20 + [0.1] * 3 + [0.4] * (pause - 3) + [0.0] * 5
    found = segment(np.zeros(len(script) * WINDOW, np.float32), Scripted(script))
    assert [(u.start, u.end) for u in found] == [(10 * WINDOW - PAD, 75 * WINDOW + PAD)]


def test_speech_shorter_than_the_minimum_is_dropped(sentences):
    blip = Stream([1.0, sentences[0][seconds(0.5):seconds(0.65)], 1.0])
    assert (SpeechDetector(SESSION).feed(blip.samples) >= RULES.threshold).any()  # the detector hears it
    assert stream(blip.samples, [SAMPLE_RATE]) == []
    assert len(segment(blip.samples, SpeechDetector(SESSION), SegmentationRules(min_speech_seconds=0.0))) == 1


def test_a_stream_that_stops_mid_speech_ends_its_utterance_at_finish(sentences):
    talk = conversation(sentences[:2])
    cut = talk.speech[1][0] + seconds(1.0)
    events = stream(talk.samples[:cut], [100 * MS])
    assert [type(e) for e in events] == [SpeechStart, Utterance, SpeechStart, Utterance]
    assert events[-1].end == cut
    segmenter = Segmenter(SpeechDetector(SESSION))
    segmenter.finish()
    with pytest.raises(RuntimeError, match="finished"):
        segmenter.feed(np.zeros(10, np.float32))


# --- long utterances


def test_an_over_long_turn_is_split_in_a_breath_and_no_piece_is_too_long(sentences):
    talk = long_turn(sentences)
    pieces = segment(talk.samples, SpeechDetector(SESSION))
    assert len(pieces) >= 2
    for piece in pieces:
        assert piece.end - piece.start <= RULES.max_samples
    breaths = [(end, start) for (_, end), (start, _) in zip(talk.speech, talk.speech[1:])]
    for before, after in zip(pieces, pieces[1:]):
        assert after.start == before.end  # one turn: the pieces join up
        assert any(b <= before.end <= a for b, a in breaths), f"cut at {before.end_seconds} s is not in a breath"
        # in the last split_search_seconds before the limit, not at the limit itself
        assert before.end - before.start >= RULES.max_samples - seconds(RULES.split_search_seconds) - 2 * WINDOW
    assert pieces[0].start <= talk.speech[0][0] and pieces[-1].end >= talk.speech[-1][1]


def decided(samples: np.ndarray, rules=RULES) -> list:
    """(event, samples received when it came) for a stream fed one window at a time: the exact
    audio time of each decision."""
    segmenter, events = Segmenter(SpeechDetector(SESSION), rules), []
    for position in range(0, samples.size, WINDOW):
        events += [(e, segmenter.position) for e in segmenter.feed(samples[position:position + WINDOW])]
    return events + [(e, segmenter.position) for e in segmenter.finish()]


def test_interim_results_come_every_interim_seconds_of_a_running_utterance(sentences):
    talk = long_turn(sentences)
    every, window, counts = RULES.interim_samples, RULES.interim_window_samples, []
    for event, at in decided(talk.samples):
        if isinstance(event, SpeechStart):
            start, interims = event.start, []
        elif isinstance(event, Interim):  # the last interim_window_seconds of the utterance so far
            assert event.start == max(start, event.end - window) and at == event.end
            assert np.array_equal(event.samples, talk.samples[event.start:event.end])
            interims.append(event.end)
        else:
            assert event.start == start
            # the end of the window that each n * interim_seconds falls in, until the utterance ends
            due = [-(-(start + n * every) // WINDOW) * WINDOW for n in range(1, 10)]
            assert interims == [t for t in due if t < at]
            counts.append(len(interims))
    assert max(counts) == 3  # at 5, 10 and 15 s of a piece cut near the 20 s limit
    events = [e for e, _ in decided(talk.samples, SegmentationRules(interim_seconds=None))]
    assert not [e for e in events if isinstance(e, Interim)]
    whole = [e for e, _ in decided(talk.samples, SegmentationRules(interim_window_seconds=None))]
    starts = {e.start for e in whole if isinstance(e, (Interim, Utterance))}
    assert len([e for e in whole if isinstance(e, Interim)]) >= 3 and len(starts) <= 2  # from its utterance's start


# --- streaming


def test_events_are_identical_for_any_chunking_and_equal_the_offline_path(sentences):
    talk = Stream([0.7, sentences[0], 1.2, long_turn(sentences, count=8).samples[seconds(0.5):],
                   0.3, sentences[3], 0.9], noise=0.002)
    expected = stream(talk.samples, [talk.samples.size])
    kinds = {type(e) for e in expected}
    assert kinds == {SpeechStart, Interim, Utterance}
    for name, sizes in chunkings(talk.samples.size).items():
        assert stream(talk.samples, sizes) == expected, name
    assert segment(talk.samples, SpeechDetector(SESSION)) == utterances(expected)


def test_the_end_of_a_turn_is_known_within_a_second_of_the_end_of_speech(sentences):
    talk = conversation(sentences)
    ends = [(e, at) for e, at in decided(talk.samples) if isinstance(e, Utterance)]
    assert len(ends) == len(talk.speech)
    for (utterance, at), (_, speech_end) in zip(ends, talk.speech):
        # `pause` after the detector's end of speech (where the padding after it starts) ...
        assert at - (utterance.end - PAD) == RULES.pause_samples
        # ... which trails the true end by at most two windows (the model's own lag on these
        # recordings), plus the window the true end falls in
        assert at - speech_end <= RULES.pause_samples + 3 * WINDOW
        assert at - speech_end < SAMPLE_RATE


def test_memory_stays_bounded_over_a_long_stream(sentences):
    """Ten minutes of turns and over-long monologues: held samples never grow past the longest
    utterance, and fall back to the padding look-back in silence."""
    talk = Stream([conversation(sentences).samples, long_turn(sentences, count=24).samples, 5.0], noise=0.002)
    samples = talk.samples[:talk.samples.size // WINDOW * WINDOW]  # each repeat on the same window grid
    repeats = -(-seconds(600) // samples.size)
    segmenter, most, count = Segmenter(SpeechDetector(SESSION)), 0, 0
    silent_tail = samples.size - seconds(4.0)
    for _ in range(repeats):
        for position in range(0, samples.size, SAMPLE_RATE):
            count += len(utterances(segmenter.feed(samples[position:position + SAMPLE_RATE])))
            most = max(most, segmenter.buffered)
            assert segmenter.buffered < RULES.max_samples
            if position >= silent_tail:
                assert segmenter.buffered <= PAD + WINDOW
    assert segmenter.position == repeats * samples.size >= seconds(600)
    assert most > RULES.max_samples - seconds(RULES.split_search_seconds)  # it did hold long utterances
    assert segmenter._audio._data.size <= 4 * RULES.max_samples  # the array behind them too
    assert count == repeats * len(segment(samples, SpeechDetector(SESSION)))


def test_the_vad_rate_is_the_ensembles():
    """The steps read nothing of the package: the VAD's own rate must be the contract's."""
    assert segmentation.SAMPLE_RATE == SAMPLE_RATE


def test_the_vad_file_has_the_tensors_its_spec_declares():
    """core.specs.vad_spec is what the stream model looks Silero's tensors up by: it must be the file's."""
    from ser_triton.core import specs
    from ser_triton.export.repository import vad_tensors

    spec = specs.vad_spec()
    onnx = {t.name: len(t.shape) for t in SESSION.get_inputs() + SESSION.get_outputs()}
    for tensor in spec.inputs + spec.outputs:
        assert onnx[tensor.name] == (0 if tensor.is_length else len(tensor.dims) + 1), tensor.name
    assert set(onnx) == {t.name for t in spec.inputs + spec.outputs}
    assert vad_tensors() == segmentation.VAD_TENSORS


def test_a_tentative_end_is_given_once_a_pause_has_lasted_and_withdrawn_when_speech_goes_on(sentences):
    """With tentative_after, the segmenter also says, part way into each pause, how the utterance will end if
    the pause lasts: the same span as its Utterance when it does, withdrawn when the speaker goes on. The
    events themselves do not change, and the tentative ones are the same for any chunking."""
    talk = Stream([0.7, sentences[0], 0.3, sentences[1], 1.2, long_turn(sentences, count=8).samples[seconds(0.5):],
                   0.3, sentences[3], 0.9], noise=0.002)
    after = PAD  # as soon as the padding after the speech is in
    expected = stream(talk.samples, [talk.samples.size])
    found = {name: stream(talk.samples, sizes, tentative_after=after)
             for name, sizes in chunkings(talk.samples.size).items()}
    for name, events in found.items():
        assert [e for e in events if not isinstance(e, (Tentative, Withdrawn))] == expected, name
        assert events == found["whole"], name
    events, open_tentative, used, withdrawn = found["whole"], None, 0, 0
    for event in events:
        if isinstance(event, Tentative):
            assert open_tentative is None
            assert np.array_equal(event.samples, talk.samples[event.start:event.end])
            open_tentative = event
        elif isinstance(event, Withdrawn):
            assert (event.start, event.end) == (open_tentative.start, open_tentative.end)
            open_tentative, withdrawn = None, withdrawn + 1
        elif isinstance(event, Utterance) and open_tentative is not None:
            assert (event.start, event.end) == (open_tentative.start, open_tentative.end)  # the pause lasted
            open_tentative, used = None, used + 1
        elif isinstance(event, Utterance):  # cut at its longest: no pause to be tentative about
            assert event.end - event.start > RULES.max_samples - seconds(RULES.split_search_seconds)
    assert open_tentative is None and used >= 3 and withdrawn >= 1  # the 0.3 s pause inside the first turn
