"""A recording's emotions over time: a timeline picture and WebVTT subtitles, from its segments.

    python client/infer.py call.wav --timeline call.png --subtitles call.vtt

The picture draws each label's probability over every segment (speech only, where the recording
was segmented by speech), the segments as bands, and their transcripts; it needs matplotlib (the
evaluate extra). The subtitles give one cue a segment, `[angry 0.81] transcript`, or one per group of
N words (`--subtitles-words N`, timed by the words), which a media player shows over the recording.
"""

from pathlib import Path

from ser_triton.core.contract import LABELS
from ser_triton.core.result import Result


def vtt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def cue_text(text: str) -> str:
    """Text as a WebVTT cue carries it: &, < and > escaped (a transcript's <unk> is no tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cues(result: Result, words_per_cue: int | None = None) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue: one a segment, or with `words_per_cue`, one per group of that
    many of a segment's words, from the first one's start to the last one's end (a segment without
    words keeps its one cue)."""
    found = []
    for segment in result.segments:
        score = segment.probabilities[segment.label]
        tag = f"[{segment.label} {score:.2f}]"
        if not words_per_cue or not segment.words:
            found.append((segment.start, segment.end, f"{tag} {segment.transcript}".rstrip()))
            continue
        for first in range(0, len(segment.words), words_per_cue):
            group = segment.words[first:first + words_per_cue]
            found.append((group[0]["start"], group[-1]["end"], " ".join([tag] + [word["word"] for word in group])))
    return found


def subtitles(result: Result, words_per_cue: int | None = None) -> str:
    """WebVTT: one cue a segment (or a group of `words_per_cue` words), `[label score] words`."""
    lines = ["WEBVTT", ""]
    for number, (start, end, text) in enumerate(cues(result, words_per_cue), 1):
        lines += [str(number), f"{vtt_time(start)} --> {vtt_time(end)}", cue_text(text), ""]
    return "\n".join(lines)


def write_subtitles(result: Result, path: Path, words_per_cue: int | None = None) -> None:
    Path(path).write_text(subtitles(result, words_per_cue), encoding="utf-8")


def write_timeline(result: Result, path: Path) -> None:
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ValueError("--timeline draws with matplotlib: pip install '.[evaluate]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(max(8.0, min(40.0, result.duration / 3)), 4.2))
    colours = dict(zip(LABELS, ("#e6a100", "#3b6fb6", "#c8322d", "#7f7f7f")))
    for label in LABELS:
        xs, ys = [], []
        for segment in result.segments:
            xs += [segment.start, segment.end, None]
            ys += [segment.probabilities[label]] * 2 + [None]
        axes.plot(xs, ys, color=colours.get(label), linewidth=2.2, label=label)
    seconds_per_inch = max(result.duration, 1.0) / figure.get_size_inches()[0]
    for segment in result.segments:
        axes.axvspan(segment.start, segment.end, color="#dde8f5", zorder=0)
        fits = max(4, int((segment.end - segment.start) / seconds_per_inch * 11))  # ~11 characters an inch
        words = segment.transcript if len(segment.transcript) <= fits else segment.transcript[:fits - 1] + "…"
        axes.text((segment.start + segment.end) / 2, 0.97, words, ha="center", va="top", fontsize=7)
    axes.set_xlim(0, max(result.duration, result.segments[-1].end if result.segments else 1.0))
    axes.set_ylim(0, 1)
    axes.set_xlabel("seconds")
    axes.set_ylabel("probability")
    axes.set_title(f"{result.file}: {result.label}, weighted over {len(result.segments)} segments")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
