"""What a classification returns, and how segment results combine into one answer."""

from dataclasses import asdict, dataclass, field

import numpy as np

from ser_triton.core.contract import CLIENT_WINDOW_SECONDS, LABELS, SAMPLE_RATE
from ser_triton.core.summary import OVERLAP_SECONDS, SILENCE_SECONDS, CallSummary, summarize


@dataclass
class Segment:
    start: float  # seconds
    end: float
    label: str
    probabilities: dict[str, float]
    transcript: str
    words: list[dict] = field(default_factory=list)
    """The transcript's words, [{"word", "start", "end"}], in seconds of the recording (core.contract.WORDS)."""
    channel: int = 1
    """The speaker lane it was heard on: 1 for the first channel (or the mix), 2 for the second (core.channels)."""


@dataclass
class Result:
    file: str
    label: str
    probabilities: dict[str, float]
    transcript: str
    duration: float  # seconds of audio
    latency: float = 0.0  # seconds from request to answer
    segments: list[Segment] = field(default_factory=list)
    words: list[dict] = field(default_factory=list)
    """Every segment's words, in the segments' order (that of `transcript`), in seconds of the recording."""
    channels: int = 1
    """Speaker lanes the recording was classified as: 1 (mono, or mixed down), or one a channel (split)."""

    def to_json_dict(self) -> dict:
        return asdict(self)

    def summary(self, silence_seconds: float = SILENCE_SECONDS,
                overlap_seconds: float = OVERLAP_SECONDS) -> CallSummary:
        """The call in figures (core.summary): per speaker, talk time, emotions and their longest stretches,
        the first and last minute; the overlaps and the silences longer than these times."""
        return summarize(self, silence_seconds, overlap_seconds)


def segment_bounds(num_samples: int, window_seconds: float = CLIENT_WINDOW_SECONDS) -> list[tuple[int, int]]:
    """Split [0, num_samples) into equal segments of at most `window_seconds` each.

    Equal lengths avoid a last segment of a few milliseconds that carries no speech.
    """
    window = max(1, int(window_seconds * SAMPLE_RATE))
    count = max(1, -(-num_samples // window))
    edges = np.linspace(0, num_samples, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def text_of(tensor) -> str:
    """The one string of a [1] / [1, 1] TYPE_STRING output (bytes from Triton, or str)."""
    value = tensor.reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def shifted_words(words: list[dict], offset_samples: int) -> list[dict]:
    """Words timed from the start of a piece of audio (the ensemble's WORDS), timed from `offset_samples`
    earlier: the recording's or the stream's time. The ensemble's times are whole CTC frames, so the
    sum is taken in samples, exactly."""
    def moved(seconds: float) -> float:
        return (offset_samples + round(seconds * SAMPLE_RATE)) / SAMPLE_RATE

    return [{"word": word["word"], "start": moved(word["start"]), "end": moved(word["end"])} for word in words]


def make_segment(start: int, end: int, probabilities, transcript: str, words: list[dict] = (),
                 channel: int = 1) -> Segment:
    """A segment of samples [start, end) of the recording; `words` as the ensemble timed them (from
    the segment's own start)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return Segment(
        start=start / SAMPLE_RATE, end=end / SAMPLE_RATE,
        label=LABELS[int(np.argmax(probabilities))],
        probabilities={label: float(p) for label, p in zip(LABELS, probabilities)},
        transcript=transcript, words=shifted_words(list(words), start), channel=channel,
    )


def combine(file: str, segments: list[Segment], latency: float = 0.0, duration: float | None = None,
            channels: int = 1) -> Result:
    """One result for a whole recording: duration-weighted mean of its segments' probabilities
    (segments of speech only, where the recording was segmented by speech: silence does not vote).
    `duration`: the recording's, where it ends after its last segment. `channels`: its speaker lanes
    (segments of several are given in time order)."""
    weights = np.array([s.end - s.start for s in segments])
    table = np.array([[s.probabilities[label] for label in LABELS] for s in segments])
    mean = weights @ table / weights.sum()
    return Result(
        file=file, label=LABELS[int(np.argmax(mean))],
        probabilities={label: float(p) for label, p in zip(LABELS, mean)},
        transcript=" ".join(s.transcript for s in segments if s.transcript),
        duration=float(segments[-1].end if duration is None else duration), latency=latency, segments=segments,
        words=[word for s in segments for word in s.words], channels=channels,
    )


@dataclass(frozen=True)
class StreamEvent:
    """One event of a live stream (core.contract.EVENTS): where its audio starts and ends, as
    sample indices from the stream's start (exact), and for interim and utterance the answer."""
    event: str
    start_sample: int
    end_sample: int | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None
    transcript: str | None = None
    words: list[dict] | None = None
    """With the answer: the transcript's words, [{"word", "start", "end"}], in seconds of the stream."""
    channel: int = 1
    """The speaker lane: 1 for the first channel (or a mono stream), 2 for the second (core.channels)."""

    @property
    def start(self) -> float:
        """Seconds from the stream's start: start * SAMPLE_RATE is the sample index."""
        return self.start_sample / SAMPLE_RATE

    @property
    def end(self) -> float | None:
        return None if self.end_sample is None else self.end_sample / SAMPLE_RATE

    def to_json_dict(self) -> dict:
        record = {"event": self.event, "start": self.start, "end": self.end,
                  "start_sample": self.start_sample, "end_sample": self.end_sample, "channel": self.channel}
        if self.label is not None:
            record |= {"label": self.label, "probabilities": self.probabilities, "transcript": self.transcript,
                       "words": self.words or []}
        return record

    def segment(self) -> Segment:
        return Segment(self.start, self.end, self.label, dict(self.probabilities), self.transcript,
                       list(self.words or []), self.channel)
