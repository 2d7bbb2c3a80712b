"""What ser-evaluate writes: summary.json, summary.md, confusion.png, predictions*.jsonl, skipped.jsonl.

summary.json's top-level keys (wa, ua, macro_f1, per_class, confusion, wer, cer, n_utterances,
n_skipped, skipped, labels...) describe the served system; other systems (--compare, --reference)
are under `comparisons`, each with the same scores and its agreement with the served one.
matplotlib is imported only to draw the PNG.
"""

import json
from pathlib import Path

import numpy as np

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import Skipped


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(bounds) -> str:
    if bounds is None or None in bounds:
        return ""
    return f" [{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"


def _system_name(system: dict) -> str:
    if system["kind"] == "served":
        return f"{system['name']} ({system['url']}, {system['protocol']})"
    return f"{system['name']} (PyTorch, preset {system['model'].get('preset')})"


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _scores_row(name: str, scores: dict) -> str:
    return _row([name, _percent(scores.get("wa")) + _interval(scores.get("wa_ci95")),
                 _percent(scores.get("ua")) + _interval(scores.get("ua_ci95")),
                 _percent(scores.get("macro_f1")),
                 _percent(scores.get("wer")) + _interval(scores.get("wer_ci95")), _percent(scores.get("cer"))])


def _delta(comparison: dict, key: str) -> str:
    delta = comparison["delta"].get(key)
    if delta is None or delta["value"] is None:
        return "-"
    low, high = delta["ci95"]
    bounds = "" if low is None else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
    return f"{100 * delta['value']:+.1f} pts{bounds}"


def _throughput(throughput: dict) -> str:
    rate = throughput["utterances_per_s"]
    if rate is None:
        return "-"
    return (f"{rate:.2f} utterances/s, {throughput['audio_seconds_per_s']:.2f} audio-s/s "
            f"({throughput['audio_seconds']:.1f} s of audio in {throughput['wall_s']:.1f} s)")


def markdown(summary: dict) -> str:
    data, served = summary["data"], summary["system"]
    lines = [f"# Evaluation of {data['name']}", "",
             f"{summary['n_utterances']} utterances from {data['source']} ({data['kind']}), "
             f"{summary['n_skipped']} skipped. Intervals: 95% bootstrap over utterances "
             f"({summary['bootstrap']['resamples']} resamples, seed {summary['bootstrap']['seed']}).", "",
             _row(["system", "WA", "UA", "macro-F1", "WER", "CER"]), _row(["---"] * 6),
             _scores_row(_system_name(served), summary)]
    comparisons = summary.get("comparisons", {})
    lines += [_scores_row(_system_name(c["system"]), c) for c in comparisons.values()]
    if comparisons:
        lines += ["", f"Against {served['name']} (deltas: other minus {served['name']}, paired bootstrap):", "",
                  _row(["system", "label agreement", "transcript CER", "max probability diff", "ΔWA", "ΔUA", "ΔWER"]),
                  _row(["---"] * 7)]
        for name, comparison in comparisons.items():
            agreement = comparison["agreement"]
            cer = agreement["transcript_cer"]
            lines.append(_row([name, _percent(agreement["label_agreement"]), "-" if cer is None else f"{cer:.4f}",
                               f"{agreement['max_probability_diff']:.2e}", _delta(agreement, "wa"),
                               _delta(agreement, "ua"), _delta(agreement, "wer")]))
    lines += ["", f"## Per class ({served['name']})", "", _row(["class", "precision", "recall", "F1", "support"]),
              _row(["---"] * 5)]
    for label, scores in summary["per_class"].items():
        lines.append(_row([label, _percent(scores["precision"]), _percent(scores["recall"]), _percent(scores["f1"]),
                           scores["support"]]))
    confusion = summary["confusion"]
    lines += ["", f"## Confusion ({served['name']}): rows gold, columns predicted; count (share of the row)", "",
              _row(["gold \\ predicted", *LABELS]), _row(["---"] * (len(LABELS) + 1))]
    for label, counts, shares in zip(LABELS, confusion["counts"], confusion["normalized"]):
        cells = [f"{count} ({'-' if share is None else f'{share:.0%}'})" for count, share in zip(counts, shares)]
        lines.append(_row([label, *cells]))
    lines += ["", f"## Skipped: {summary['n_skipped']}"]
    if summary["skipped"]:
        lines += ["", _row(["reason", "rows"]), _row(["---"] * 2)]
        lines += [_row([reason, count]) for reason, count in summary["skipped"].items()]
        lines += ["", "Each skipped row and why: skipped.jsonl."]
    lines += ["", "## Throughput", "", f"- {served['name']}: {_throughput(summary['throughput'])}"]
    lines += [f"- {name}: {_throughput(c['throughput'])}" for name, c in comparisons.items()]
    return "\n".join(lines) + "\n"


def plot_confusion(summary: dict, path: Path) -> None:
    """One heat map per system: colour and % are the share of the gold row, with the count under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(_system_name(summary["system"]), summary)]
    panels += [(_system_name(c["system"]), c) for c in summary.get("comparisons", {}).values()]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.2, 4.9), squeeze=False,
                                layout="constrained")
    for position, (axis, (name, scores)) in enumerate(zip(axes[0], panels)):
        counts = np.array(scores["confusion"]["counts"])
        shares = np.array([[np.nan if v is None else v for v in row] for row in scores["confusion"]["normalized"]])
        image = axis.imshow(np.nan_to_num(shares), cmap="Blues", vmin=0, vmax=1)
        for (row, column), count in np.ndenumerate(counts):
            share = shares[row, column]
            if np.isnan(share):
                text, colour = "no\nutterances", "0.5"
            elif count == 0:
                text, colour = "0", "0.6"
            else:
                text, colour = f"{100 * share:.0f}%\n({count})", "white" if share > 0.55 else "black"
            axis.text(column, row, text, ha="center", va="center", fontsize=9, color=colour,
                      fontweight="bold" if row == column else "normal")
        axis.set_xticks(range(len(LABELS)), labels=LABELS)
        axis.set_xlabel("predicted label")
        if position == 0:
            axis.set_yticks(range(len(LABELS)), labels=[f"{label}\nn={n}" for label, n in zip(LABELS, counts.sum(1))])
            axis.set_ylabel("gold label")
        else:
            axis.set_yticks(range(len(LABELS)), labels=[])
        axis.tick_params(length=0)
        axis.set_title(f"{name}\nWA {_percent(scores['wa'])}   UA {_percent(scores['ua'])}   "
                       f"macro-F1 {_percent(scores['macro_f1'])}", fontsize=9)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the gold label's utterances (row)")
    figure.suptitle(f"{summary['data']['name']}: {summary['n_utterances']} utterances", fontsize=11)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def write(summary: dict, records: dict[str, list[dict]], skipped: list[Skipped], directory: Path) -> dict[str, Path]:
    """Every output file into `directory`; `records` maps a system's name to its prediction records."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"summary.json": directory / "summary.json", "summary.md": directory / "summary.md",
             "confusion.png": directory / "confusion.png", "skipped.jsonl": directory / "skipped.jsonl"}
    paths["summary.json"].write_text(json.dumps(summary, indent=1) + "\n")
    paths["summary.md"].write_text(markdown(summary))
    plot_confusion(summary, paths["confusion.png"])
    _write_jsonl(paths["skipped.jsonl"], ({"source": s.source, "reason": s.reason, "detail": s.detail} for s in skipped))
    served = summary["system"]["name"]
    for name, rows in records.items():
        file = "predictions.jsonl" if name == served else f"predictions.{name}.jsonl"
        paths[file] = directory / file
        _write_jsonl(paths[file], rows)
    return paths
