"""Utterances out of a live stream or a long recording: Silero VAD and the segmentation rules.

A live call arrives in chunks of any size; the emotion model wants one speaker turn at a time
(IEMOCAP-like: 1-20 s, mean ~4.5 s). `SpeechDetector` runs Silero VAD's ONNX model (shipped by
the `silero-vad` package, which `make export` copies into the stream model's folder; run here
with ONNX Runtime, no torch) over 32 ms windows and gives a
speech probability per window. `Segmenter` turns those probabilities into events: `SpeechStart`
when speech is confirmed, `Interim` every few seconds of a still-running utterance, `Utterance`
when it ends (a pause, the longest length, or the end of the stream). `SegmentationRules` is the
one place for the rules; `segment` is the offline path over a whole recording.

Every decision depends on audio time (window indices) only, never on how the audio was chunked:
any chunking gives the same events, with the same sample-exact boundaries. Times are sample
indices from the start of the stream; `*_seconds` divides them by SAMPLE_RATE.
"""

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16_000
"""The rate of Silero's 16 kHz model, and of the ensemble (core.contract.SAMPLE_RATE: a test
checks they agree; the steps read nothing of the package that exports them)."""
WINDOW = 512
"""Samples per VAD window at 16 kHz (32 ms): the only window size Silero's 16 kHz model takes."""
CONTEXT = 64
"""Samples of the previous window that the model sees in front of each window (zeros at first)."""
WINDOW_SECONDS = WINDOW / SAMPLE_RATE
LONGEST_SECONDS = 3600.0
"""A sanity bound of max_seconds; the stream step holds it to the ensemble's own audio limit."""


def vad_session(path):
    """A session of Silero VAD's ONNX file (one for all the streams of a model: run is thread-safe);
    a window is tiny, so one thread per run, as the package's own OnnxWrapper uses. ONNX Runtime is
    imported here, not with the module: the rules alone (SegmentationRules, which the stream gateway
    checks a WebSocket's start message with) need none of it."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _as_samples(samples) -> np.ndarray:
    """Mono float32 samples. Not scanned for NaN or infinity: that is done once, where audio enters
    (the stream model's chunk, segment()'s recording), since one NaN would poison the VAD's state
    for the rest of the stream."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must be one-dimensional (mono), not shape {samples.shape}")
    if samples.dtype.kind != "f":
        raise ValueError(f"samples must be float in [-1, 1], not {samples.dtype}")
    return samples.astype(np.float32, copy=False)


VAD_TENSORS = {"audio": "input", "state": "state", "rate": "sr", "probability": "output", "next_state": "stateN"}
"""Silero VAD's tensors by role; the stream model gets them from its config (core.specs.vad_spec)."""


class SpeechDetector:
    """Silero VAD over a stream: feed samples in chunks of any size, get one speech probability
    per completed 512-sample window, the same for any chunking.

    The model input is [1, CONTEXT + WINDOW] float32 (the last 64 samples of the previous window,
    then the window), `state` [2, 1, 128] float32 (zeros at the start, then the model's
    `stateN`), and `sr` an int64 scalar; `output` [1, 1] is the probability. Several streams'
    detectors score their windows together with `score_together`: one model run per step for all
    of them (a row of a batch is computed as it is alone: tests/test_segmentation.py checks it).
    """

    def __init__(self, session, tensors: dict | None = None):
        """`session`: vad_session's (an onnxruntime.InferenceSession)."""
        self.session = session
        self.tensors = tensors or VAD_TENSORS
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.windows = 0
        """Windows scored so far."""

    @property
    def pending(self) -> int:
        """Samples of the partial window waiting for the rest of it."""
        return self._pending.size

    def _inputs(self, samples: np.ndarray) -> np.ndarray:
        """The model inputs [n, CONTEXT + WINDOW] of the windows these samples complete, each with the
        64 samples before it in front; the partial window is kept for the next samples."""
        samples = np.concatenate([self._context, self._pending, samples])
        count = (samples.size - CONTEXT) // WINDOW
        starts = np.arange(count) * WINDOW
        inputs = samples[starts[:, None] + np.arange(CONTEXT + WINDOW)] if count else \
            np.zeros((0, CONTEXT + WINDOW), dtype=np.float32)
        used = CONTEXT + count * WINDOW
        self._context, self._pending = samples[used - CONTEXT:used].copy(), samples[used:].copy()
        return inputs

    def feed(self, samples) -> np.ndarray:
        """The probabilities (float32) of the windows that these samples complete."""
        return score_together([self], [self._inputs(_as_samples(samples))])[0]

    def flush(self) -> np.ndarray:
        """The last partial window, zero-padded (as silero's get_speech_timestamps does): 0 or 1
        probabilities."""
        if not self._pending.size:
            return np.zeros(0, dtype=np.float32)
        window = np.zeros(WINDOW, dtype=np.float32)
        window[:self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return self.feed(window)


def score_together(detectors: list, inputs: list) -> list:
    """Each detector's probabilities of its windows (`inputs`: as its _inputs gave them): step i
    runs the i-th window of every detector that has one as one batch, each row with its own state.
    The detectors must be distinct (one stream's windows follow each other) and share a session."""
    if len({id(detector) for detector in detectors}) != len(detectors):
        raise ValueError("one stream twice in a batch: a stream's windows follow each other, score them in turn")
    found = [np.zeros(len(windows), dtype=np.float32) for windows in inputs]
    if not detectors:
        return found
    session, names = detectors[0].session, detectors[0].tensors
    rate = np.array(SAMPLE_RATE, dtype=np.int64)
    for step in range(max(len(windows) for windows in inputs)):
        rows = [row for row, windows in enumerate(inputs) if len(windows) > step]
        state = np.concatenate([detectors[row]._state for row in rows], axis=1)
        output, state = session.run([names["probability"], names["next_state"]], {
            names["audio"]: np.stack([inputs[row][step] for row in rows]), names["state"]: state,
            names["rate"]: rate})
        for at, row in enumerate(rows):
            found[row][step] = output[at, 0]
            detectors[row]._state = state[:, at:at + 1].copy()
            detectors[row].windows += 1
    return found


class RuleError(ValueError):
    """A segmentation rule has a value it cannot have; the message names the rule and its range."""


@dataclass(frozen=True)
class SegmentationRules:
    """How speech probabilities become utterances. Durations are in seconds.

    threshold (0.5): a window is speech from this probability up; Silero's own default, tuned by
        its authors across datasets.
    negative_threshold (None: threshold - 0.15, as Silero): once in speech, only windows below
        this count toward a pause, so a word's soft ending does not start the pause clock early.
    min_speech_seconds (0.25, Silero's default): speech shorter than this (a click, a cough, a
        lone "mm") is dropped; no utterance starts until this much speech has been heard.
    pause_seconds (0.64 = 20 windows): this much non-speech ends an utterance. Pauses between
        words and clauses of one turn are mostly under half a second, a turn change ~1 s. The end
        is decided when the pause has lasted this long, counted from the first window below
        negative_threshold: within pause + one window (0.672 s) of the end of speech as the model
        hears it (its own lag is a window or two more), which leaves a live result under 1 s
        where one utterance's classification takes under ~0.3 s (bench/streaming.py measures it).
    padding_seconds (0.15): audio kept before and after the detected speech, for the onsets and
        tails that a 32 ms window misses (hand-cut IEMOCAP turns hold some silence too). Must be
        shorter than the pause, so the padding after speech has arrived when the end is decided.
    max_seconds (20.0): the longest utterance, IEMOCAP's longest turns, well inside the server's
        audio limit (30 s by default); a longer stretch of speech is split.
    split_search_seconds (5.0): at max_seconds, the utterance is cut at the quietest window
        (lowest speech probability) of its last this-many seconds, not at the limit itself: a
        5 s stretch nearly always holds a breath or a phrase boundary, and pieces stay >= 15 s.
    interim_seconds (5.0, None for none): a running utterance gives an Interim every this-many
        seconds of its audio (about one mean IEMOCAP utterance), so a long turn shows results
        before it ends.
    interim_window_seconds (5.0, None for all of it): an Interim covers the last this-many seconds
        of the running utterance, not all of it so far (as Hume measures the last few seconds): it
        says how the speaker sounds now, in an IEMOCAP-sized span, and costs the same at minute
        one as at second five (over all of it, a 15 s turn cost 5 + 10 s of audio in interims).
    """

    threshold: float = 0.5
    negative_threshold: float | None = None
    min_speech_seconds: float = 0.25
    pause_seconds: float = 0.64
    padding_seconds: float = 0.15
    max_seconds: float = 20.0
    split_search_seconds: float = 5.0
    interim_seconds: float | None = 5.0
    interim_window_seconds: float | None = 5.0

    def __post_init__(self):
        for rule in dataclasses.fields(self):
            value = getattr(self, rule.name)
            if value is None and rule.name in ("negative_threshold", "interim_seconds", "interim_window_seconds"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RuleError(f"segmentation rule {rule.name}: must be a finite number, not {value!r}")
        self._check("threshold", 0.0, 1.0, low_open=True, high_open=True)
        if self.negative_threshold is not None:
            self._check("negative_threshold", 0.0, self.threshold, low_open=True, high_name="threshold")
        self._check("max_seconds", 1.0, LONGEST_SECONDS)
        self._check("pause_seconds", WINDOW_SECONDS, self.max_seconds, high_open=True, high_name="max_seconds")
        self._check("padding_seconds", 0.0, self.pause_seconds, high_open=True, high_name="pause_seconds")
        self._check("min_speech_seconds", 0.0, self.max_seconds, high_open=True, high_name="max_seconds")
        self._check("split_search_seconds", WINDOW_SECONDS, self.max_seconds / 2, high_name="max_seconds / 2")
        if self.interim_seconds is not None:
            self._check("interim_seconds", WINDOW_SECONDS, self.max_seconds, high_name="max_seconds")
        if self.interim_window_seconds is not None:
            # no bound by max_seconds: a window longer than any utterance covers all of each (the
            # default 5 s stays valid under a max_seconds of 1 s)
            self._check("interim_window_seconds", WINDOW_SECONDS, LONGEST_SECONDS)

    def _check(self, name, low, high, low_open=False, high_open=False, high_name=None):
        value = getattr(self, name)
        if (value > low if low_open else value >= low) and (value < high if high_open else value <= high):
            return
        upper = f"{high:g}" + (f" ({high_name})" if high_name else "")
        raise RuleError(f"segmentation rule {name}={value!r} is out of range: allowed "
                        f"{low:g} {'<' if low_open else '<='} {name} {'<' if high_open else '<='} {upper}")

    @classmethod
    def from_dict(cls, values: dict | None = None, **overrides) -> "SegmentationRules":
        """The defaults with some rules changed: from a dict (a config file's) and/or keywords."""
        values = {**(values or {}), **overrides}
        known = [rule.name for rule in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise RuleError(f"unknown segmentation rule(s) {', '.join(map(repr, unknown))}: "
                            f"the rules are {', '.join(known)}")
        return cls(**values)

    @property
    def negative(self) -> float:
        """The pause threshold in force."""
        if self.negative_threshold is not None:
            return self.negative_threshold
        return max(self.threshold - 0.15, 0.01)

    @staticmethod
    def _samples(seconds: float) -> int:
        return round(seconds * SAMPLE_RATE)

    @property
    def min_speech_samples(self) -> int:
        return self._samples(self.min_speech_seconds)

    @property
    def pause_samples(self) -> int:
        return self._samples(self.pause_seconds)

    @property
    def padding_samples(self) -> int:
        return self._samples(self.padding_seconds)

    @property
    def max_samples(self) -> int:
        return self._samples(self.max_seconds)

    @property
    def split_search_windows(self) -> int:
        return max(1, self._samples(self.split_search_seconds) // WINDOW)

    @property
    def interim_samples(self) -> int | None:
        return None if self.interim_seconds is None else self._samples(self.interim_seconds)

    @property
    def interim_window_samples(self) -> int | None:
        return None if self.interim_window_seconds is None else self._samples(self.interim_window_seconds)


@dataclass(frozen=True)
class SpeechStart:
    """Speech has been confirmed; its utterance's audio begins at `start` (padding included)."""

    start: int

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class _Span:
    start: int
    end: int
    samples: np.ndarray = field(repr=False)

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return self.end / SAMPLE_RATE

    def __eq__(self, other):
        return (type(other) is type(self) and (self.start, self.end) == (other.start, other.end)
                and np.array_equal(self.samples, other.samples))

    __hash__ = None


class Utterance(_Span):
    """One finished utterance: samples[start:end] of the stream, padding included."""


class Interim(_Span):
    """A still-running utterance so far: its last interim_window_seconds (all of it, without a window)
    to the end of the latest window."""


class Tentative(_Span):
    """The running utterance as it will end if the pause that has begun lasts (speech up to the pause,
    plus the padding): given, where asked for, once the pause has lasted `tentative_after` samples, so
    that its classification can start before the end is decided. Not an event for the caller."""


@dataclass(frozen=True)
class Withdrawn:
    """The pause of the last Tentative did not last: the speaker went on (or the utterance was cut
    otherwise). Not an event for the caller."""

    start: int
    end: int


class _Audio:
    """The stream's samples from `start` on, in a growing array that is trimmed at the front."""

    def __init__(self):
        self.start = 0
        self._data = np.zeros(SAMPLE_RATE, dtype=np.float32)
        self._first = self._end = 0  # the data in use: _data[_first:_end]

    def __len__(self) -> int:
        return self._end - self._first

    def append(self, samples: np.ndarray) -> None:
        if self._end + samples.size > self._data.size:
            kept = self._data[self._first:self._end]
            grown = np.zeros(max(SAMPLE_RATE, 2 * (kept.size + samples.size)), dtype=np.float32)
            grown[:kept.size] = kept
            self._data, self._first, self._end = grown, 0, kept.size
        self._data[self._end:self._end + samples.size] = samples
        self._end += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        assert self.start <= start <= end <= self.start + len(self)
        return self._data[self._first + start - self.start:self._first + end - self.start].copy()

    def drop_before(self, position: int) -> None:
        position = min(max(position, self.start), self.start + len(self))
        self._first += position - self.start
        self.start = position


class Segmenter:
    """Chunks of a stream in, events out (SpeechStart, Interim, Utterance), in audio order.

    One per stream, with its own SpeechDetector (the ONNX session behind them is shared). Holds
    only the current utterance's audio and the padding look-back, so memory stays bounded (under
    max_seconds, besides the latest chunk) over a stream of any length.

    `tentative_after` (samples, None for never): also give a Tentative once a pause within a
    confirmed utterance has lasted this long (at least the padding), and a Withdrawn when that pause
    ends otherwise than as the Tentative said. Either way the events and their spans are the same.
    """

    def __init__(self, detector: SpeechDetector, rules: SegmentationRules | None = None,
                 tentative_after: int | None = None):
        self.rules = rules or SegmentationRules()
        self.tentative_after = None if tentative_after is None else max(tentative_after, self.rules.padding_samples)
        self._tentative = None  # the Tentative given for the current pause, until it is used or withdrawn
        self.detector = detector
        self.detector.reset()
        self._audio = _Audio()
        self._received = 0
        self._finished = False
        self._floor = 0  # no utterance starts before this: the end of the previous one
        self._history = deque(maxlen=self.rules.split_search_windows)  # (window, probability)
        self._idle()

    def _idle(self) -> None:
        self._speech = None  # the first speech window's start, while in an utterance
        self._start = None  # the utterance's audio start (padding included)
        self._silence = None  # where the current pause began, if one has
        self._confirmed = False
        self._next_interim = None

    @property
    def buffered(self) -> int:
        """Samples held."""
        return len(self._audio)

    @property
    def position(self) -> int:
        """Samples received so far."""
        return self._received

    def feed(self, samples) -> list:
        """The events that these samples decide; they must be finite (checked where they entered)."""
        return feed_together([self], [samples])[0]

    def _accept(self, samples) -> np.ndarray:
        """Hold these samples (as mono float32, which it gives back) for their windows to be scored."""
        if self._finished:
            raise RuntimeError("the stream has finished: start a new Segmenter")
        samples = _as_samples(samples)
        self._audio.append(samples)
        self._received += samples.size
        return samples

    def _decide(self, probabilities: np.ndarray) -> list:
        """The events of the windows just scored (their probabilities, in order)."""
        events, first = [], self.detector.windows - len(probabilities)
        for window, probability in enumerate(probabilities, start=first):
            events += self._window(window, float(probability), (window + 1) * WINDOW)
        self._audio.drop_before(self._start if self._speech is not None
                                else max(self._floor, self.detector.windows * WINDOW - self.rules.padding_samples))
        return events

    def finish(self) -> list:
        """The end of the stream: the last partial window, then the running utterance, if any."""
        if self._finished:
            return []
        events = []
        for probability in self.detector.flush():
            events += self._window(self.detector.windows - 1, float(probability), self._received)
        self._finished = True
        tentative, self._tentative = self._tentative, None
        if self._speech is not None:
            speech_end = self._received if self._silence is None else self._silence
            if self._confirmed or speech_end - self._speech >= self.rules.min_speech_samples:
                if not self._confirmed:
                    events.append(SpeechStart(self._start))
                end = min(self._received, speech_end + self.rules.padding_samples)
                events.append(Utterance(self._start, end, self._audio.slice(self._start, end)))
        if tentative is not None and not (events and (events[-1].start, events[-1].end) == (tentative.start,
                                                                                           tentative.end)):
            events.append(Withdrawn(tentative.start, tentative.end))
        self._idle()
        self._audio.drop_before(self._received)
        return events

    def _window(self, window: int, probability: float, now: int) -> list:
        """One window's decisions; `now` is the end of the window (of the stream, for the last)."""
        rules, events = self.rules, []
        self._history.append((window, probability))
        begins = window * WINDOW
        if self._speech is None:
            if probability < rules.threshold:
                return events
            self._speech = begins
            self._start = max(self._floor, begins - rules.padding_samples)
        if probability >= rules.threshold:
            self._silence = None
        elif probability < rules.negative and self._silence is None:
            self._silence = begins
        if self._silence is not None and now - self._silence >= rules.pause_samples:
            if self._confirmed:
                end = self._silence + rules.padding_samples
                events.append(Utterance(self._start, end, self._audio.slice(self._start, end)))
                self._floor = end
            self._tentative = None  # used (its span is this utterance's)
            self._idle()
            return events
        events += self._tentative_events(now)
        if not self._confirmed and self._silence is None and now - self._speech >= rules.min_speech_samples:
            self._confirmed = True
            events.append(SpeechStart(self._start))
            if rules.interim_samples:
                self._next_interim = self._start + rules.interim_samples
        if now + WINDOW - self._start > rules.max_samples:
            return events + self._split(now)
        if self._next_interim is not None and now >= self._next_interim:
            window = rules.interim_window_samples
            first = self._start if window is None else max(self._start, now - window)
            events.append(Interim(first, now, self._audio.slice(first, now)))
            self._next_interim += rules.interim_samples
        return events

    def _tentative_events(self, now: int) -> list:
        """A Tentative once the current pause has lasted tentative_after; Withdrawn for one whose pause
        is over without ending the utterance."""
        events = []
        pause = self._silence if self._confirmed else None
        if self._tentative is not None and self._tentative.end != (None if pause is None
                                                                   else pause + self.rules.padding_samples):
            events.append(Withdrawn(self._tentative.start, self._tentative.end))
            self._tentative = None
        if (self.tentative_after is not None and pause is not None and self._tentative is None
                and now - pause >= self.tentative_after):
            end = pause + self.rules.padding_samples
            self._tentative = Tentative(self._start, end, self._audio.slice(self._start, end))
            events.append(self._tentative)
        return events

    def _split(self, now: int) -> list:
        """The utterance has reached its longest: cut it in the middle of the quietest recent
        window, then replay the windows after the cut, which start the next utterance."""
        first = self._speech // WINDOW + 1  # never at the very first speech window
        candidates = [(p, w) for w, p in self._history if w >= first]
        if candidates:
            _, quietest = min(candidates, key=lambda c: (c[0], -c[1]))  # the latest of equal ones
            cut = quietest * WINDOW + WINDOW // 2
        else:  # padding as long as the search: nothing to choose from
            quietest, cut = now // WINDOW, now
        events = []
        if self._confirmed:
            events.append(Utterance(self._start, cut, self._audio.slice(self._start, cut)))
        self._floor = cut
        self._idle()
        replay = [(w, p) for w, p in self._history if w > quietest]
        self._history.clear()
        for w, p in replay:
            events += self._window(w, p, min(now, (w + 1) * WINDOW))
        return events


def feed_together(segmenters: list, chunks: list) -> list:
    """Segmenter.feed of several streams' chunks at once (one chunk per stream, each stream once),
    the windows of their SpeechDetectors scored together (score_together; any other detector, e.g. a
    test's, scores its own): each stream's events, the same as fed alone."""
    accepted = [segmenter._accept(chunk) for segmenter, chunk in zip(segmenters, chunks)]
    rows = [row for row, segmenter in enumerate(segmenters) if isinstance(segmenter.detector, SpeechDetector)]
    detectors = [segmenters[row].detector for row in rows]
    scored = dict(zip(rows, score_together(detectors, [detector._inputs(accepted[row])
                                                       for row, detector in zip(rows, detectors)])))
    return [segmenter._decide(scored[row] if row in scored else segmenter.detector.feed(samples))
            for row, (segmenter, samples) in enumerate(zip(segmenters, accepted))]


def segment(samples, detector: SpeechDetector, rules: SegmentationRules | None = None) -> list:
    """The utterances of a whole recording: the same as streaming it through a Segmenter, which
    it does in 10 s chunks, so that no copy of the whole recording is held besides the caller's."""
    samples, segmenter, events = _as_samples(samples), Segmenter(detector, rules), []
    bad = np.count_nonzero(~np.isfinite(samples))
    if bad:
        raise ValueError(f"samples hold {bad} NaN or infinite values")
    for start in range(0, samples.size, 10 * SAMPLE_RATE):
        events += segmenter.feed(samples[start:start + 10 * SAMPLE_RATE])
    return [event for event in events + segmenter.finish() if isinstance(event, Utterance)]
