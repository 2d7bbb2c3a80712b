"""What a training run writes besides its checkpoints: training.json, test_predictions.jsonl,
test_split.csv, curves.png, confusion.png and MODEL_CARD.md, each atomically (train.files).

test_predictions.jsonl has the lines of ser-evaluate's predictions.jsonl (evaluation.systems.
prediction_record), and test_split.csv is the test split as a manifest, so that
`ser-evaluate OUT/test_split.csv` scores the served model on exactly these clips. The scores in
training.json are ser-evaluate's (evaluation.metrics.score_records): wa, ua, macro_f1, per_class,
confusion, with 95% bootstrap intervals.
"""

import csv
import io
from pathlib import Path

from ser_triton.core.contract import LABELS
from ser_triton.evaluation.report import plot_confusion
from ser_triton.train import files, summary

SPEAKER_DEPENDENT = ("SPEAKER-DEPENDENT: validation clips come from the training speakers (--split research), so "
                     "validation scores and the accuracy in the checkpoint names are higher than on new speakers")


def write_test_split(path: Path, clips) -> Path:
    """The test clips as a manifest ser-evaluate reads (absolute paths, the served labels)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "path", "label", "text", "speaker", "session"])
    for clip in clips:
        u = clip.utterance
        writer.writerow([u.id, str(Path(u.path).resolve()), u.label, u.text or "", u.speaker or "", u.session or ""])
    return files.write_text(path, buffer.getvalue())


def plot_curves(epochs: list[dict], best_epoch: int, title: str, path: Path) -> None:
    """Training and validation loss, and validation UA and WA, per epoch; the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [e["epoch"] for e in epochs]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    loss_axis.plot(x, [e["train_loss"] for e in epochs], "o-", ms=3, label="training loss")
    loss_axis.plot(x, [e["validation_loss"] for e in epochs], "o-", ms=3, label="validation loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    loss_axis.legend()
    accuracy_axis.plot(x, [e["validation_ua"] for e in epochs], "o-", ms=3, label="validation UA")
    accuracy_axis.plot(x, [e["validation_wa"] for e in epochs], "o-", ms=3, label="validation WA")
    accuracy_axis.axhline(1 / len(LABELS), color="0.6", ls=":", label="chance")
    for axis in (loss_axis, accuracy_axis):
        axis.axvline(best_epoch, color="0.3", ls="--", lw=1)
    accuracy_axis.set_xlabel(f"epoch (dashed: the kept epoch, {best_epoch})")
    accuracy_axis.set_ylim(0, 1)
    accuracy_axis.legend()
    figure.suptitle(title, fontsize=10)
    files.replace_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    plt.close(figure)


def plot_test_confusion(report: dict, path: Path) -> None:
    """evaluation.report's heat map of the test split."""
    summary = {"system": {"kind": "pytorch", "name": "test split", "model": report["model"]}, **report["test"],
               "data": {"name": report["title"]}}
    files.replace_atomically(path, lambda temporary: plot_confusion(summary, temporary))


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _interval(scores: dict, key: str) -> str:
    low, high = scores.get(f"{key}_ci95") or (None, None)
    return "" if low is None else f" [{100 * low:.1f}, {100 * high:.1f}]"


def model_card(report: dict) -> str:
    """MODEL_CARD.md: what the model is, what it was trained and tested on, the numbers, the limits."""
    data, split, recipe, model = report["data"], report["split"], report["recipe"], report["model"]
    calibration = report["calibration"]
    speakers = split["speakers"]
    lines = [f"# Model card: {report['title']}", ""]
    if not split["speaker_independent"]:
        lines += [f"**{SPEAKER_DEPENDENT}.**", ""]
    lines += [
        "## What it is",
        "",
        f"The research model (HuBERT acoustic encoder, wav2vec2 CTC transcript -> BERT, cross-modal gated fusion "
        f"head -> {', '.join(LABELS)}), preset `{model['preset']}`"
        + (f", continued from `{model['checkpoint']}`" if model.get("checkpoint") else "") + f", trained by "
        f"`ser-train` with the `{recipe['name']}` recipe ({recipe['summary']}). Checkpoint: "
        f"`{report['best_checkpoint']}` (epoch {report['best_epoch']} of {len(report['curves'])}, chosen on "
        f"validation UA), in the research format; serve it with "
        f"`make export PRESET={model['preset']} CHECKPOINT={report['best_checkpoint']}`.",
        "",
        "## Data",
        "",
        f"{data['utterances']} usable utterances from `{data['source']}` ({data['kind']}). " + text_of(report),
        "",
        _row(["split", "speakers", "utterances", *LABELS]), _row(["---"] * (3 + len(LABELS))),
    ]
    for part in ("train", "validation", "test"):
        lines.append(_row([part, ", ".join(speakers[part]), split["utterances"][part],
                           *[split["labels"][part][label] for label in LABELS]]))
    lines += ["", f"Split: {split['how']}."]
    if data["mapped"] or data["left_out"]:
        mapped = ", ".join(f"{k} ({v})" for k, v in data["mapped"].items()) or "none"
        left_out = ", ".join(f"{k} ({v})" for k, v in data["left_out"].items()) or "none"
        lines += ["", f"Labels mapped: {mapped}. Left out: {left_out}."]
    lines += ["", f"Skipped: {data['n_skipped']}" + (" (" + ", ".join(f"{reason}: {n}" for reason, n in
                                                                    data["skipped"].items()) + ")."
                                                     if data["skipped"] else ".")]
    lines += ["", "## Results", "", "95% bootstrap intervals over utterances.", "",
              _row(["split", "WA", "UA", "macro-F1", "ECE before", "ECE after"]), _row(["---"] * 6)]
    for part in ("validation", "test"):
        scores = report[part]
        lines.append(_row([part + (" (speaker-dependent)" if part == "validation" and not split["speaker_independent"]
                                   else ""),
                           _percent(scores["wa"]) + _interval(scores, "wa"),
                           _percent(scores["ua"]) + _interval(scores, "ua"), _percent(scores["macro_f1"]),
                           f"{calibration[part]['ece_before']:.3f}", f"{calibration[part]['ece_after']:.3f}"]))
    lines += ["", f"Calibration: temperature {calibration['temperature']:.3f}, fitted on validation (NLL) and folded "
                  f"into `fc.weight` and `fc.bias`; ECE over {calibration['bins']} equal-width bins. Chance UA is "
                  f"{1 / len(LABELS):.2f}.", "",
              "Test confusion (rows gold, columns predicted):", "",
              _row(["gold \\ predicted", *LABELS]), _row(["---"] * (len(LABELS) + 1))]
    for label, counts in zip(LABELS, report["test"]["confusion"]["counts"]):
        lines.append(_row([label, *counts]))
    lines += ["", "## Limits", "", *[f"- {limit}" for limit in limits(report)], ""]
    return "\n".join(lines)


def text_of(report: dict) -> str:
    """What the text branch read, in a sentence."""
    if report["recipe"]["text_branch"] == "off":
        return ("The text branch is off (audio only): the head's projection of the text encoder is zero, so the "
                "transcript does not change the answer.")
    read = ("the ASR's transcripts, as served" if report["data"]["text"] == "asr" else
            "the data's reference text (`--text reference`); served, it reads the ASR's transcript, and the test "
            "split here is scored on the ASR's transcripts, as served")
    trained = "fine-tuned" if report["recipe"]["text_branch"] == "train" else "frozen"
    return f"The text branch (its encoder {trained}) trained on {read}."


def limits(report: dict) -> list[str]:
    model, data = report["model"], report["data"]
    found = [f"Trained and tested on {data['name']} only: other speakers, languages, microphones and emotions "
             f"acted or spontaneous will score differently. Four classes ({', '.join(LABELS)}); anything else is "
             f"forced into one of them."]
    if model["preset"] != "pretrained":
        found.append(f"Preset `{model['preset']}`: small networks trained from random weights, because no pretrained "
                     f"weights were used. These are not the research model's accuracy; the same command with "
                     f"PRESET=pretrained is the real run.")
    if report["data"]["text"] == "reference":
        found.append("Trained on reference text: served, the text branch reads the ASR's transcripts instead.")
    if not report["split"]["speaker_independent"]:
        found.append(SPEAKER_DEPENDENT + ".")
    found.append("Served answers equal these test predictions (same labels, probabilities within 1e-4) for the fp32 "
                 "export (`make export`, PRECISION=fp32); reduced precisions drift as export_report.json says.")
    return found


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def write(out: Path, data: dict, test_clips, test_logits) -> None:
    """Every file of a finished run but its checkpoints, training.json last."""
    files.write_jsonl(out / summary.OUTPUTS["test_predictions"], summary.records(test_clips, test_logits))
    write_test_split(out / summary.OUTPUTS["test_split"], test_clips)
    plot_curves(data["curves"], data["best_epoch"], data["title"], out / summary.OUTPUTS["curves"])
    plot_test_confusion(data, out / summary.OUTPUTS["confusion"])
    files.write_text(out / summary.OUTPUTS["model_card"], model_card(data))
    files.write_json(out / summary.TRAINING_JSON, data)
