"""A recording's emotions over time: a timeline picture and WebVTT subtitles, from its segments.

    python client/infer.py call.wav --timeline call.png --subtitles call.vtt

The picture draws each label's probability over every segment (speech only, where the recording
was segmented by speech), the segments as bands, and their transcripts, one lane per speaker where
the channels were split; it needs matplotlib (the evaluate extra). The subtitles give one cue a
segment, `[angry 0.81] transcript`, or one per group of N words (`--subtitles-words N`, timed by the
words), which a media player shows over the recording; where the channels were split each cue
carries a voice tag, `<v Channel 2>`, so the player shows who is speaking.
"""

from pathlib import Path

from ser_triton.core.contract import LABELS
from ser_triton.core.result import Result

COLOURS = dict(zip(LABELS, ("#e6a100", "#3b6fb6", "#c8322d", "#7f7f7f")))


def vtt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def cue_text(text: str) -> str:
    """Text as a WebVTT cue carries it: &, < and > escaped (a transcript's <unk> is no tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def speaker(channel: int) -> str:
    """What subtitles and the picture call a lane."""
    return f"Channel {channel}"


def cues(result: Result, words_per_cue: int | None = None) -> list[tuple[float, float, int, str]]:
    """(start, end, channel, text) of each cue in time order: one a segment, or with `words_per_cue`,
    one per group of that many of a segment's words, from the first one's start to the last one's
    end (a segment without words keeps its one cue)."""
    found = []
    for segment in result.segments:
        score = segment.probabilities[segment.label]
        tag = f"[{segment.label} {score:.2f}]"
        if not words_per_cue or not segment.words:
            found.append((segment.start, segment.end, segment.channel, f"{tag} {segment.transcript}".rstrip()))
            continue
        for first in range(0, len(segment.words), words_per_cue):
            group = segment.words[first:first + words_per_cue]
            found.append((group[0]["start"], group[-1]["end"], segment.channel,
                          " ".join([tag] + [word["word"] for word in group])))
    return sorted(found, key=lambda cue: (cue[0], cue[2]))


def subtitles(result: Result, words_per_cue: int | None = None) -> str:
    """WebVTT: one cue a segment (or a group of `words_per_cue` words), `[label score] words`, each
    with its speaker's voice tag where the channels were split (result.channels > 1)."""
    lines = ["WEBVTT", ""]
    for number, (start, end, channel, text) in enumerate(cues(result, words_per_cue), 1):
        voice = f"<v {speaker(channel)}>" if result.channels > 1 else ""
        lines += [str(number), f"{vtt_time(start)} --> {vtt_time(end)}", voice + cue_text(text), ""]
    return "\n".join(lines)


def write_subtitles(result: Result, path: Path, words_per_cue: int | None = None) -> None:
    Path(path).write_text(subtitles(result, words_per_cue), encoding="utf-8")


def _lane(axes, segments, duration: float, seconds_per_inch: float) -> None:
    """One speaker's lane: each label's probability over its segments, the segments as bands, their words."""
    for label in LABELS:
        xs, ys = [], []
        for segment in segments:
            xs += [segment.start, segment.end, None]
            ys += [segment.probabilities[label]] * 2 + [None]
        axes.plot(xs, ys, color=COLOURS.get(label), linewidth=2.2, label=label)
    for segment in segments:
        axes.axvspan(segment.start, segment.end, color="#dde8f5", zorder=0)
        fits = max(4, int((segment.end - segment.start) / seconds_per_inch * 11))  # ~11 characters an inch
        words = segment.transcript if len(segment.transcript) <= fits else segment.transcript[:fits - 1] + "…"
        axes.text((segment.start + segment.end) / 2, 0.97, words, ha="center", va="top", fontsize=7)
    if not segments:
        axes.text(duration / 2, 0.5, "no speech", ha="center", va="center", color="#7f7f7f")
    axes.set_ylim(0, 1)
    axes.set_ylabel("probability")


def write_timeline(result: Result, path: Path) -> None:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ValueError("--timeline draws with matplotlib: pip install '.[evaluate]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    lanes = range(1, result.channels + 1)
    figure, axes = pyplot.subplots(len(lanes), 1, sharex=True, squeeze=False,
                                   figsize=(max(8.0, min(40.0, result.duration / 3)), 1.0 + 3.2 * len(lanes)))
    end = max(result.duration, result.segments[-1].end if result.segments else 1.0)
    seconds_per_inch = max(result.duration, 1.0) / figure.get_size_inches()[0]
    for channel, lane in zip(lanes, axes[:, 0]):
        segments = [segment for segment in result.segments if segment.channel == channel]
        _lane(lane, segments, end, seconds_per_inch)
        if result.channels > 1:
            lane.set_title(f"{speaker(channel)}: {len(segments)} segments", fontsize=9, loc="left")
    axes[0, 0].set_xlim(0, end)
    axes[-1, 0].set_xlabel("seconds")
    figure.suptitle(f"{result.file}: {result.label}, weighted over {len(result.segments)} segments")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
