"""A recording's emotions over time: a timeline picture and WebVTT subtitles, from its segments.

    python client/infer.py call.wav --timeline call.png --subtitles call.vtt

The picture draws each label's probability over every segment (speech only, where the recording
was segmented by speech), the segments as bands, and their transcripts; it needs matplotlib (the
evaluate extra). The subtitles give one cue a segment, `[angry 0.81] transcript`, which a media
player shows over the recording.
"""

from pathlib import Path

from ser_triton.core.contract import LABELS
from ser_triton.core.result import Result


def vtt_time(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def subtitles(result: Result) -> str:
    cues = ["WEBVTT", ""]
    for number, segment in enumerate(result.segments, 1):
        score = segment.probabilities[segment.label]
        text = f"[{segment.label} {score:.2f}] {segment.transcript}".rstrip()
        cues += [str(number), f"{vtt_time(segment.start)} --> {vtt_time(segment.end)}", text, ""]
    return "\n".join(cues)


def write_subtitles(result: Result, path: Path) -> None:
    Path(path).write_text(subtitles(result), encoding="utf-8")


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
