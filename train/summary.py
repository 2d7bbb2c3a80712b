"""training.json's content: the data, the split, the recipe, the curves, the scores of validation and
test (ser-evaluate's, with bootstrap intervals), calibration, throughput, the machine; and the mean
and spread over folds."""

import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from ser_triton.core.contract import LABELS
from ser_triton.core.result import Result
from ser_triton.evaluation import metrics
from ser_triton.evaluation.systems import prediction_record
from ser_triton.export.cpu_features import machine
from ser_triton.train import calibration
from ser_triton.train.clips import Clip
from ser_triton.train.processes import processes
from ser_triton.train.splits import PARTS

TRAINING_JSON = "training.json"
OUTPUTS = {"test_predictions": "test_predictions.jsonl", "test_split": "test_split.csv", "curves": "curves.png",
           "confusion": "confusion.png", "model_card": "MODEL_CARD.md"}



def records(clips: list[Clip], logits: np.ndarray) -> list[dict]:
    """ser-evaluate's prediction records (predictions.jsonl's lines) of clips and their logits."""
    rows = []
    for clip, probabilities in zip(clips, calibration.softmax(logits)):
        result = Result(str(clip.utterance.path), LABELS[int(np.argmax(probabilities))],
                        {label: float(p) for label, p in zip(LABELS, probabilities)}, clip.transcript, clip.seconds)
        rows.append(prediction_record(result, clip.utterance))
    return rows


def calibration_of(logits_before: np.ndarray, logits_after: np.ndarray, labels: np.ndarray) -> dict:
    before, after = calibration.softmax(logits_before), calibration.softmax(logits_after)
    return {"ece_before": calibration.expected_calibration_error(before, labels),
            "ece_after": calibration.expected_calibration_error(after, labels),
            "nll_before": calibration.nll(before, labels), "nll_after": calibration.nll(after, labels)}


def data_summary(options, dataset, parts: dict, skipped: list) -> dict:
    """What was read: counts per label, what was mapped, left out and skipped (session.TrainOptions, a Dataset)."""
    usable = [c.utterance for part in PARTS for c in parts[part]]
    mapped = {}
    for u in usable:
        spelling = (u.original_label or u.label).strip().lower()
        if spelling in options.label_map:
            mapped[f"{spelling} -> {u.label}"] = mapped.get(f"{spelling} -> {u.label}", 0) + 1
    left_out = {}
    for row in dataset.skipped:
        if row.by_design and row.label is not None:
            left_out[row.label] = left_out.get(row.label, 0) + 1
    problems = [row for row in dataset.skipped + skipped if not row.by_design]
    reasons = {}
    for row in problems:
        reasons[row.reason] = reasons.get(row.reason, 0) + 1
    name = dataset.name
    if dataset.kind == "manifest":  # a manifest's file name alone says little: its folder and name
        name = f"{Path(options.data).resolve().parent.name}/{Path(options.data).name}"
    return {"source": str(options.data), "kind": dataset.kind, "name": name, "text": options.text,
            "utterances": len(usable), "labels": report_counts(usable), "label_map": options.label_map,
            "audio_seconds": float(sum(c.seconds for part in PARTS for c in parts[part])),
            "mapped": mapped, "left_out": left_out, "n_skipped": len(problems), "skipped": reasons,
            "skipped_rows": [{"source": r.source, "reason": r.reason, "detail": r.detail} for r in problems]}


def report_counts(utterances) -> dict:
    return {label: sum(u.label == label for u in utterances) for label in LABELS}


def build_report(options, builder, dataset, split, parts, skipped, progress, best, temperature, validation, test,
                 timings) -> dict:
    labels = {part: np.array([LABELS.index(c.utterance.label) for c in parts[part]]) for part in ("validation", "test")}
    scored = {}
    for part, logits in (("validation", validation / temperature), ("test", test)):
        scored[part] = metrics.score_records(records(parts[part], logits), options.bootstrap, options.seed)
    calibrated = {"temperature": temperature, "bins": calibration.ECE_BINS, "fitted_on": "validation",
                  "validation": calibration_of(validation, validation / temperature, labels["validation"]),
                  "test": calibration_of(test * temperature, test, labels["test"])}
    for part in ("validation", "test"):
        scored[part]["calibration"] = calibrated[part]
    split_description = split.describe() | {
        "utterances": {p: len(parts[p]) for p in PARTS},
        "labels": {p: report_counts([c.utterance for c in parts[p]]) for p in PARTS},
        "speakers": {p: sorted({c.utterance.speaker for c in parts[p]}) for p in PARTS}}
    epochs = progress["epochs"]
    data = data_summary(options, dataset, parts, skipped)
    title = (f"{data['name']}: {options.recipe.name} recipe, preset {options.preset}"
             + ("" if split.name == "split" else f", {split.name}")
             + ("" if split.speaker_independent else " (SPEAKER-DEPENDENT validation)"))
    rates = [e["audio_seconds_per_second"] for e in epochs]
    margins = [c.asr_margin for c in parts["test"]]
    return {
        "title": title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": options.command,
        "data": data,
        "split": split_description,
        "recipe": {"name": options.recipe.name, "summary": options.recipe.summary, **options.recipe.knobs()},
        "model": {**builder.description, "checkpoint": None if options.checkpoint is None else str(options.checkpoint)},
        "seed": options.seed,
        "device": options.device,
        "processes": processes(),
        "machine": machine(),
        "versions": {"ser-triton": _version("ser-triton"), "python": platform.python_version(),
                     **machine()["versions"]},
        "curves": epochs,
        "best_epoch": progress["best_epoch"],
        "best_checkpoint": str(best),
        "speaker_independent": split.speaker_independent,
        "validation": scored["validation"],
        "test": scored["test"],
        "confusion": scored["test"]["confusion"],
        "calibration": calibrated,
        "asr": {"transcripts": "the exported fp32 ONNX ASR in the server's session, one clip at a time, decoded by "
                               "the ctc_tokenize step's code",
                "smallest_top2_logit_gap_test": float(min(margins)) if margins else None},
        "throughput": {"train_audio_seconds_per_second": float(np.median(rates)) if rates else None,
                       "train_seconds": float(sum(e["train_seconds"] for e in epochs)),
                       "reading_clips_seconds": timings["survey_seconds"],
                       "caching_features_seconds": timings["cache_seconds"]},
        "export": f"make export PRESET={options.preset} CHECKPOINT={best}",
        "outputs": {**{k: str(Path(best).parent / v) for k, v in OUTPUTS.items()}},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None



def folds_summary(options, reports: list[dict]) -> dict:
    """Mean and standard deviation over the folds of each test and validation score."""
    summary = {"folds": [], "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": options.command, "recipe": reports[0]["recipe"], "model": reports[0]["model"],
               "seed": options.seed, "speaker_independent": all(r["speaker_independent"] for r in reports)}
    for r in reports:
        summary["folds"].append({"split": r["split"]["name"], "how": r["split"]["how"],
                                 "best_checkpoint": r["best_checkpoint"], "best_epoch": r["best_epoch"],
                                 **{f"{part}_{key}": r[part][key] for part in ("validation", "test")
                                    for key in ("wa", "ua", "macro_f1")}})
    for part in ("validation", "test"):
        summary[part] = {}
        for key in ("wa", "ua", "macro_f1"):
            values = np.array([r[part][key] for r in reports], dtype=np.float64)
            summary[part][key] = float(values.mean())
            summary[part][f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary
