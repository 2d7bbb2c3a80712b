"""What a classification returns, and how segment results combine into one answer."""

from dataclasses import asdict, dataclass, field

import numpy as np

from ser_triton.core.contract import CLIENT_WINDOW_SECONDS, LABELS, SAMPLE_RATE


@dataclass
class Segment:
    start: float  # seconds
    end: float
    label: str
    probabilities: dict[str, float]
    transcript: str


@dataclass
class Result:
    file: str
    label: str
    probabilities: dict[str, float]
    transcript: str
    duration: float  # seconds of audio
    latency: float = 0.0  # seconds from request to answer
    segments: list[Segment] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return asdict(self)


def segment_bounds(num_samples: int, window_seconds: float = CLIENT_WINDOW_SECONDS) -> list[tuple[int, int]]:
    """Split [0, num_samples) into equal segments of at most `window_seconds` each.

    Equal lengths avoid a last segment of a few milliseconds that carries no speech.
    """
    window = max(1, int(window_seconds * SAMPLE_RATE))
    count = max(1, -(-num_samples // window))
    edges = np.linspace(0, num_samples, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def make_segment(start: int, end: int, probabilities, transcript: str) -> Segment:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return Segment(
        start=start / SAMPLE_RATE, end=end / SAMPLE_RATE,
        label=LABELS[int(np.argmax(probabilities))],
        probabilities={label: float(p) for label, p in zip(LABELS, probabilities)},
        transcript=transcript,
    )


def combine(file: str, segments: list[Segment], latency: float = 0.0, duration: float | None = None) -> Result:
    """One result for a whole recording: duration-weighted mean of its segments' probabilities
    (segments of speech only, where the recording was segmented by speech: silence does not vote).
    `duration`: the recording's, where it ends after its last segment."""
    weights = np.array([s.end - s.start for s in segments])
    table = np.array([[s.probabilities[label] for label in LABELS] for s in segments])
    mean = weights @ table / weights.sum()
    return Result(
        file=file, label=LABELS[int(np.argmax(mean))],
        probabilities={label: float(p) for label, p in zip(LABELS, mean)},
        transcript=" ".join(s.transcript for s in segments if s.transcript),
        duration=float(segments[-1].end if duration is None else duration), latency=latency, segments=segments,
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

    @property
    def start(self) -> float:
        """Seconds from the stream's start: start * SAMPLE_RATE is the sample index."""
        return self.start_sample / SAMPLE_RATE

    @property
    def end(self) -> float | None:
        return None if self.end_sample is None else self.end_sample / SAMPLE_RATE

    def to_json_dict(self) -> dict:
        record = {"event": self.event, "start": self.start, "end": self.end,
                  "start_sample": self.start_sample, "end_sample": self.end_sample}
        if self.label is not None:
            record |= {"label": self.label, "probabilities": self.probabilities, "transcript": self.transcript}
        return record

    def segment(self) -> Segment:
        return Segment(self.start, self.end, self.label, dict(self.probabilities), self.transcript)
