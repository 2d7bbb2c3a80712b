"""`make bench BENCH_ARGS=--training`: ser-train's recipes and presets on RAVDESS, speaker-independent.

    python -m ser_triton.bench.training                     # every run of RUNS, then bench/results/training.*
    python -m ser_triton.bench.training --runs scratch:tiny --fresh
    python -m ser_triton.bench.training --runs scratch:small:text-branch=train,epochs=40     # knobs of a run

Each run is `ser-train` on RAVDESS's four classes (actors 01-18 train, validation speakers among
them, actors 19-24 test), in its own folder under bench/work/training (reused while its settings are
the same: --fresh trains again), beside the MFCC baseline (bench/mfcc_baseline.py) on the same
split. Writes bench/results/training.json (each run's test and validation WA/UA with 95% bootstrap
intervals, macro-F1, best epoch, seconds per epoch, training throughput in audio-seconds per second,
calibration; the baseline; this machine and its load) and training.png (validation UA per epoch,
test UA beside the baseline); plots of metrics only: no audio, no weights. RAVDESS is for tests,
benchmarks and evaluation only; nothing trained on it leaves bench/work.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ser_triton.bench import mfcc_baseline
from ser_triton.bench.report import load_average
from ser_triton.evaluation.datasets import load_dataset, parse_label_map
from ser_triton.export.cpu_features import machine
from ser_triton.train.summary import TRAINING_JSON

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "training"
RAVDESS = Path(os.environ.get("SER_RAVDESS", ROOT.parent / "shared" / "data" / "ravdess")) / "manifest.csv"
"""Where RAVDESS is: ../shared/data/ravdess beside the repository (SER_RAVDESS=DIR elsewhere)."""
LEFT_OUT = "calm,fearful,disgust,surprised=drop"
TEST_SPEAKERS = tuple(f"actor{n:02d}" for n in range(19, 25))
VALIDATION_SPEAKERS = ("actor15", "actor16", "actor17", "actor18")
RUNS = ("scratch:small", "scratch:small:text-branch=frozen", "scratch:small:text-branch=train",
        "scratch:small:text-branch=train,text=reference", "scratch:tiny", "frozen:tiny")
"""The runs measured by default: recipe:preset[:knob=value,...] (knobs: ser-train's flags)."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ser_triton.bench.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=RAVDESS, help=f"RAVDESS's manifest (default {RAVDESS})")
    parser.add_argument("--runs", default=" ".join(RUNS), help="recipe:preset[:knob=value,...] separated by spaces "
                                                               f"(default {' '.join(RUNS)})")
    parser.add_argument("--map", default=LEFT_OUT, help=f"ser-train's --map (default {LEFT_OUT})")
    parser.add_argument("--test-speakers", default=",".join(TEST_SPEAKERS), help="default: actors 19-24")
    parser.add_argument("--val-speakers", default=",".join(VALIDATION_SPEAKERS),
                        help=f"default: {','.join(VALIDATION_SPEAKERS)}")
    parser.add_argument("--train-args", default="", help="more ser-train flags for every run (e.g. '--epochs 5')")
    parser.add_argument("--fresh", action="store_true", help="train again instead of reusing a finished run")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (default 1: on a 2-core machine shared with other work, 2 threads "
                             "trained the small networks slower than 1, docs/training.md)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where training.json and training.png go")
    parser.add_argument("--work", type=Path, default=WORK, help="the runs' folders and ser-train's cache")
    return parser.parse_args(argv)


def run_flags(run: str) -> tuple[str, str, list[str]]:
    """"recipe:preset[:knob=value,...]" -> (recipe, preset, ser-train flags)."""
    recipe, preset, *knobs = run.split(":")
    flags = []
    for knob in ",".join(knobs).split(","):
        if knob:
            name, _, value = knob.partition("=")
            flags += [f"--{name}", value] if value else [f"--{name}"]
    return recipe, preset, flags


def train(run: str, args) -> dict:
    """One recipe:preset run of ser-train (reused if it finished with the same settings); its training.json."""
    recipe, preset, flags = run_flags(run)
    out = args.work / run.replace(":", "-").replace("=", "-").replace(",", "-")
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "ser_triton.train", str(args.data), "--preset", preset, "--recipe", recipe,
               "--map", args.map, "--test-speakers", args.test_speakers, "--val-speakers", args.val_speakers,
               "--out", str(out), "--cache", str(args.work / "cache"),
               "--threads", str(args.threads), "--resume", *args.train_args.split(), *flags]
    print(f"bench training: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / TRAINING_JSON).read_text())


def summary_of(run: str, report: dict) -> dict:
    curves = report["curves"]
    scores = {part: {key: report[part][key] for key in ("wa", "wa_ci95", "ua", "ua_ci95", "macro_f1")}
              for part in ("validation", "test")}
    throughput = report["throughput"]
    caching = throughput["caching_features_seconds"]
    return {
        "run": run, "recipe": report["recipe"], "model": report["model"], "created": report["created"],
        **scores, "confusion": report["test"]["confusion"]["counts"],
        "best_epoch": report["best_epoch"], "epochs": len(curves),
        "seconds_per_epoch": float(np.median([e["train_seconds"] for e in curves])),
        "train_audio_seconds_per_second": throughput["train_audio_seconds_per_second"],
        "train_seconds": throughput["train_seconds"],
        "caching_features_seconds": caching,
        "caching_audio_seconds_per_second": report["data"]["audio_seconds"] / caching if caching else None,
        "reading_clips_seconds": throughput["reading_clips_seconds"],
        "calibration": {"temperature": report["calibration"]["temperature"],
                        "test_ece_before": report["calibration"]["test"]["ece_before"],
                        "test_ece_after": report["calibration"]["test"]["ece_after"]},
        "curves": [{k: e[k] for k in ("epoch", "train_loss", "validation_loss", "validation_ua", "validation_wa")}
                   for e in curves],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for run in results["runs"]:
        curves.plot([e["epoch"] for e in run["curves"]], [e["validation_ua"] for e in run["curves"]], "-",
                    label=f"{run['run']} (kept epoch {run['best_epoch']})")
    curves.axhline(0.25, color="0.6", ls=":", label="chance")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation UA")
    curves.set_ylim(0, 1)
    curves.legend(fontsize=8)
    systems = [(run["run"], run["test"]) for run in results["runs"]] + [("MFCC + LR", results["baseline"])]
    for i, (name, scores) in enumerate(systems):
        low, high = scores["ua_ci95"]
        bars.bar(i, scores["ua"], color="C7" if name == "MFCC + LR" else f"C{i}")
        bars.errorbar(i, scores["ua"], yerr=[[scores["ua"] - low], [high - scores["ua"]]], color="black", capsize=4)
        bars.text(i, high + 0.02, f"{scores['ua']:.2f}", ha="center", fontsize=9)
    bars.axhline(0.25, color="0.6", ls=":")
    bars.set_xticks(range(len(systems)), labels=[name for name, _ in systems], fontsize=8)
    bars.set_ylabel("test UA (actors 19-24), 95% bootstrap interval")
    bars.set_ylim(0, 1)
    figure.suptitle(f"RAVDESS, 4 classes, speaker-independent — {results['machine']['cpu']}, "
                    f"{results['machine']['usable_cores']} cores", fontsize=10)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.is_file():
        print(f"bench training: {args.data} is missing: the training benchmark runs on RAVDESS "
              f"(../shared/data/ravdess next to the repository; --data elsewhere)", file=sys.stderr)
        return 2
    load_before = load_average()
    runs = [summary_of(run, train(run, args)) for run in args.runs.split()]
    dataset = load_dataset(args.data, label_map=parse_label_map([args.map]))
    test_speakers = args.test_speakers.split(",")
    test = [u for u in dataset.utterances if u.speaker in test_speakers]
    train_speakers = [u for u in dataset.utterances if u.speaker not in test_speakers]
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "load_average": {"before": load_before, "after": load_average()},
        "data": {"source": str(args.data), "map": args.map, "test_speakers": test_speakers,
                 "validation_speakers": args.val_speakers.split(","),
                 "utterances": {"train_and_validation": len(train_speakers), "test": len(test)}},
        "baseline": mfcc_baseline.baseline(train_speakers, test),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.out / "training.png")
    for run in runs:
        print(f"{run['run']}: test UA {run['test']['ua']:.3f} {run['test']['ua_ci95']}, WA {run['test']['wa']:.3f}; "
              f"{run['seconds_per_epoch']:.1f} s/epoch, {run['train_audio_seconds_per_second']:.1f} audio-s/s")
    base = results["baseline"]
    print(f"MFCC baseline: test UA {base['ua']:.3f} {base['ua_ci95']}; wrote {args.out / 'training.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
