"""make bench BENCH_ARGS=--training: each ser-train run and the MFCC baseline, into training.json and a plot."""

import json

from ser_triton.bench.__main__ import main
from tests import train_corpus

corpus = train_corpus.corpus  # the shared fixture, by its name


def test_the_training_stage_writes_each_run_beside_the_baseline(corpus, tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    arguments = ["--training", "--data", str(corpus), "--test-speakers", "s5", "--val-speakers", "s4",
                 "--map", "calm=drop", "--runs", "frozen:tiny", "--out", str(out), "--work", str(work),
                 "--threads", "1", "--train-args", "--epochs 2 --batch-size 8 --bootstrap 50"]
    assert main(arguments) == 0
    results = json.loads((out / "training.json").read_text())
    (run,) = results["runs"]
    assert run["run"] == "frozen:tiny" and run["recipe"]["name"] == "frozen" and run["epochs"] == 2
    assert run["test"]["ua_ci95"][0] <= run["test"]["ua"] <= run["test"]["ua_ci95"][1]
    assert run["train_audio_seconds_per_second"] > 0 and run["caching_audio_seconds_per_second"] > 0
    baseline = results["baseline"]
    assert baseline["c"] in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    assert sum(map(sum, baseline["confusion"]["counts"])) == results["data"]["utterances"]["test"] == 4 * 2
    assert results["machine"]["cpu"] and (out / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert main(arguments) == 0, "a second run reuses the finished one"
    assert json.loads((out / "training.json").read_text())["runs"][0]["created"] == run["created"]


def test_a_run_names_its_recipe_preset_and_knobs():
    from ser_triton.bench.training import run_flags

    assert run_flags("frozen:tiny") == ("frozen", "tiny", [])
    assert run_flags("scratch:small:text-branch=off,class-balanced,epochs=40") == (
        "scratch", "small", ["--text-branch", "off", "--class-balanced", "--epochs", "40"])
