"""A call in figures, from its segments: who talked how long and felt what, when; where both spoke, where nobody did.

`summarize(result)` (also `Result.summary()`, and `--summary` of ser-infer) gives, per speaker lane
(core.channels): the talk time, the share of it each emotion had (by the segments' labels, weighted
by their length), the emotion over all of it, the longest stretch of each non-neutral emotion (a run
of the speaker's consecutive segments with that label, from the first's start to the last's end),
and the emotion over the call's first and last minute (how it started and how it ended); for the
call, the overlaps (both speaking) and the silences (nobody speaking) longer than set times.

Segments carry the segmenter's padding (0.15 s each side by default), so two speakers who take
turns without a gap meet in their padding; an overlap counts from OVERLAP_SECONDS, twice that.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ser_triton.core.contract import LABELS

SILENCE_SECONDS = 3.0
"""A silence (nobody speaking) is reported from this long: turn changes take about a second, and the
segmenter ends a turn after 0.64 s of pause; 3 s of nobody speaking is dead air, on hold, or a search."""
OVERLAP_SECONDS = 0.3
"""Both speaking counts as an overlap from this long: twice the segmenter's padding."""
MINUTE = 60.0
NEUTRAL = "neutral"


@dataclass(frozen=True)
class Span:
    start: float
    end: float


@dataclass(frozen=True)
class Stretch:
    """A run of one speaker's consecutive segments with the same label."""
    start: float
    end: float
    talk_seconds: float
    segments: int


@dataclass(frozen=True)
class Mood:
    """The emotion of a speaker's speech over a stretch of the call: weighted by how much of each
    segment lies in it."""
    label: str
    probabilities: dict[str, float]
    talk_seconds: float


@dataclass(frozen=True)
class Speaker:
    channel: int
    talk_seconds: float
    segments: int
    silent: bool
    """No speech at all on this lane (a silent channel): every figure below is empty."""
    label: str | None
    probabilities: dict[str, float] | None
    emotions: dict[str, float]
    """Share of the talk time whose segment has each label (0 to 1; sums to 1 unless silent)."""
    longest: dict[str, Stretch | None]
    """The longest stretch of each non-neutral emotion (None where the speaker never had it)."""
    first_minute: Mood | None
    last_minute: Mood | None


@dataclass(frozen=True)
class CallSummary:
    duration: float
    speakers: dict[int, Speaker]
    overlaps: list[Span]
    overlap_seconds: float
    silences: list[Span]
    silences_longer_than: float
    overlaps_longer_than: float

    def to_json_dict(self) -> dict:
        record = asdict(self)
        record["speakers"] = {str(channel): speaker for channel, speaker in record["speakers"].items()}
        return record


def _mood(segments, start: float, end: float) -> Mood | None:
    weights = np.array([max(0.0, min(s.end, end) - max(s.start, start)) for s in segments])
    if not segments or weights.sum() <= 0:
        return None
    mean = weights @ np.array([[s.probabilities[label] for label in LABELS] for s in segments]) / weights.sum()
    return Mood(LABELS[int(np.argmax(mean))], {label: float(p) for label, p in zip(LABELS, mean)}, float(weights.sum()))


def _longest(segments, label: str) -> Stretch | None:
    best, run = None, []
    for segment in [*segments, None]:
        if segment is not None and segment.label == label:
            run.append(segment)
            continue
        if run:
            stretch = Stretch(run[0].start, run[-1].end, float(sum(s.end - s.start for s in run)), len(run))
            best = stretch if best is None or stretch.talk_seconds > best.talk_seconds else best
        run = []
    return best


def _speaker(channel: int, segments, duration: float) -> Speaker:
    talk = float(sum(s.end - s.start for s in segments))
    whole = _mood(segments, 0.0, duration)
    emotions = {label: (float(sum(s.end - s.start for s in segments if s.label == label)) / talk if talk else 0.0)
                for label in LABELS}
    return Speaker(
        channel=channel, talk_seconds=talk, segments=len(segments), silent=not segments,
        label=whole.label if whole else None, probabilities=whole.probabilities if whole else None,
        emotions=emotions, longest={label: _longest(segments, label) for label in LABELS if label != NEUTRAL},
        first_minute=_mood(segments, 0.0, min(MINUTE, duration)),
        last_minute=_mood(segments, max(0.0, duration - MINUTE), duration))


def _speaking(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of spans, as sorted disjoint spans."""
    merged = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlaps(lanes: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Where at least two lanes speak at once."""
    edges = sorted([(start, 1) for lane in lanes for start, _ in _speaking(lane)]
                   + [(end, -1) for lane in lanes for _, end in _speaking(lane)], key=lambda e: (e[0], e[1]))
    found, speaking, since = [], 0, None
    for time, step in edges:
        speaking += step
        if speaking >= 2 and since is None:
            since = time
        elif speaking < 2 and since is not None:
            if time > since:
                found.append((since, time))
            since = None
    return found


def summarize(result, silence_seconds: float = SILENCE_SECONDS,
              overlap_seconds: float = OVERLAP_SECONDS) -> CallSummary:
    """The figures of a core.result.Result (its segments, channels and duration)."""
    channels = range(1, max([result.channels, *(s.channel for s in result.segments)]) + 1)
    lanes = {channel: [s for s in result.segments if s.channel == channel] for channel in channels}
    overlaps = [Span(a, b) for a, b in _overlaps([[(s.start, s.end) for s in lane] for lane in lanes.values()])
                if b - a >= overlap_seconds]
    gaps, position = [], 0.0
    for start, end in _speaking([(s.start, s.end) for s in result.segments]) + [(result.duration, result.duration)]:
        if start - position >= silence_seconds:
            gaps.append(Span(position, start))
        position = max(position, end)
    return CallSummary(
        duration=result.duration,
        speakers={channel: _speaker(channel, segments, result.duration) for channel, segments in lanes.items()},
        overlaps=overlaps, overlap_seconds=float(sum(o.end - o.start for o in overlaps)), silences=gaps,
        silences_longer_than=silence_seconds, overlaps_longer_than=overlap_seconds)


def summary_lines(summary: CallSummary) -> list[str]:
    """The summary as lines of text, for people (ser-infer --summary without --json)."""
    lines = []
    for channel, speaker in summary.speakers.items():
        name = f"channel {channel}"
        if speaker.silent:
            lines.append(f"{name}: silent (no speech)")
            continue
        shares = ", ".join(f"{label} {share:.0%}" for label, share in speaker.emotions.items() if share)
        longest = "; ".join(f"longest {label} {s.start:.1f}-{s.end:.1f} s" for label, s in speaker.longest.items() if s)
        opened, closed = (mood.label if mood else "-" for mood in (speaker.first_minute, speaker.last_minute))
        lines.append(f"{name}: talks {speaker.talk_seconds:.1f} s in {speaker.segments} segments, {speaker.label} "
                     f"overall ({shares})" + (f"; {longest}" if longest else "")
                     + f"; first minute {opened}, last minute {closed}")
    spans = [f"{o.start:.1f}-{o.end:.1f}" for o in summary.overlaps]
    lines.append(f"overlaps: {len(spans)} ({summary.overlap_seconds:.1f} s)"
                 + (f": {', '.join(spans)}" if spans else ""))
    spans = [f"{s.start:.1f}-{s.end:.1f}" for s in summary.silences]
    lines.append(f"silences over {summary.silences_longer_than:g} s: {len(spans)}"
                 + (f": {', '.join(spans)}" if spans else ""))
    return lines
