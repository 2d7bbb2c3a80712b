"""ser-train end to end on a small made-up corpus (tests/train_corpus.py) with the tiny preset: what it
writes, that the checkpoint is the research format, calibration, run-to-run identity, resuming, kills."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import LABELS
from ser_triton.evaluation.datasets import load_dataset
from ser_triton.evaluation.systems import prediction_record
from ser_triton.core.result import Result
from ser_triton.model.checkpoint import load_checkpoint
from ser_triton.model.sources import ModelBuilder
from ser_triton.train import files, loop
from ser_triton.train.__main__ import main
from ser_triton.train.calibration import expected_calibration_error, softmax
from tests import train_corpus
from tests.conftest import REPO_ROOT
from tests.research_class import EnhancedSERModel

corpus, cache = train_corpus.corpus, train_corpus.cache  # the shared fixtures, by their names

FAST = ["--preset", "tiny", "--test-speakers", "s5", "--val-speakers", "s4", "--batch-size", "4", "--epochs", "3",
        "--patience", "3", "--crop-seconds", "0.4", "--threads", "1", "--bootstrap", "100"]
TRAINING_KEYS = {"data", "split", "recipe", "seed", "versions", "curves", "validation", "test", "confusion",
                 "calibration", "best_checkpoint", "best_epoch", "model", "machine", "speaker_independent"}


def train(corpus: Path, out: Path, cache: Path, *extra) -> dict:
    code = main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST, *extra])
    assert code == 0
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def trained(corpus, cache, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("trained")
    return out, train(corpus, out, cache)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_writes_the_research_checkpoint_and_the_report(trained):
    out, report = trained
    assert TRAINING_KEYS <= report.keys()
    assert report["data"]["labels"] == {label: 10 for label in LABELS}
    assert report["split"]["speakers"] == {"train": ["s1", "s2", "s3"], "validation": ["s4"], "test": ["s5"]}
    assert report["recipe"]["name"] == "scratch" and report["recipe"]["epochs"] == 3
    assert [e["epoch"] for e in report["curves"]] == [1, 2, 3]
    for part in ("validation", "test"):
        scores = report[part]
        assert {"wa", "ua", "macro_f1", "wa_ci95", "ua_ci95", "per_class", "confusion"} <= scores.keys()
        assert scores["ua_ci95"][0] <= scores["ua"] <= scores["ua_ci95"][1]
    best = Path(report["best_checkpoint"])
    epoch = report["best_epoch"]
    wa = next(e["validation_wa"] for e in report["curves"] if e["epoch"] == epoch)
    assert best.name == f"hubert_epoch_{epoch}_valacc_{100 * wa:.2f}.pt"
    assert sorted(p.name for p in out.glob("*.pt")) == [best.name], "the best epoch's file only (--keep-all-epochs)"
    state = load_checkpoint(best)
    assert {key.split(".")[0] for key in state} == {"hubert", "bert", "cmg", "proj_bert", "fc"}
    resume = out / loop.RESUME
    assert (resume / json.loads((resume / loop.PROGRESS).read_text())["last_checkpoint"] / "optimizer.pt").is_file()
    for name in ("curves.png", "confusion.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{100 * report['test']['ua']:.1f}%" in card and "random weights" in card and "s5" in card
    assert not files.partial_files(out) and not files.partial_files(resume)


def test_test_predictions_are_ser_evaluates_records_of_the_test_split(trained):
    out, report = trained
    predictions = read_jsonl(out / "test_predictions.jsonl")
    split = load_dataset(out / "test_split.csv")
    assert [p["id"] for p in predictions] == [u.id for u in split.utterances]
    assert {u.speaker for u in split.utterances} == {"s5"}
    shape = prediction_record(Result("f", "sad", {label: 0.25 for label in LABELS}, "", 1.0), split.utterances[0])
    for p in predictions:
        assert p.keys() == shape.keys()
        assert list(p["probabilities"]) == list(LABELS) and sum(p["probabilities"].values()) == pytest.approx(1)
        assert p["predicted_label"] == max(p["probabilities"], key=p["probabilities"].get)
    correct = [p["predicted_label"] == p["gold_label"] for p in predictions]
    assert report["test"]["wa"] == pytest.approx(np.mean(correct))


def test_the_research_class_and_make_export_load_the_checkpoint_and_give_its_answers(trained):
    """The replica of the research class loads it with strict=True; what it computes for a test clip is
    the trainer's test prediction; the export's model builder takes it as --checkpoint."""
    out, report = trained
    best = Path(report["best_checkpoint"])
    builder = ModelBuilder("tiny", checkpoint=best)
    research = EnhancedSERModel(builder.config("acoustic_encoder"), builder.config("text_encoder")).eval()
    research.load_state_dict(torch.load(best, weights_only=True), strict=True)
    tokenizer = builder.bert_tokenizer
    for p in read_jsonl(out / "test_predictions.jsonl")[:4]:
        audio = load_audio(p["file"])
        normalised = torch.from_numpy((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]
        tokens = tokenizer(p["transcript"], truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits = research(normalised, tokens["input_ids"], tokens["attention_mask"])[0]
        probabilities = torch.softmax(logits.double(), -1).numpy()
        assert np.abs(probabilities - [p["probabilities"][label] for label in LABELS]).max() < 1e-4


def test_the_temperature_is_folded_into_fc_and_changes_no_label(trained):
    out, report = trained
    progress = json.loads((out / loop.RESUME / loop.PROGRESS).read_text())
    trained_weights = safetensors.torch.load_file(out / loop.RESUME / progress["best_resume_checkpoint"]
                                                  / "model.safetensors")
    folded = load_checkpoint(report["best_checkpoint"])
    temperature = report["calibration"]["temperature"]
    assert temperature > 0 and temperature != 1
    for key in ("fc.weight", "fc.bias"):
        assert torch.allclose(folded[key] * temperature, trained_weights[key], atol=1e-6)
    assert torch.equal(folded["cmg.q_proj.weight"], trained_weights["cmg.q_proj.weight"])
    calibration = report["calibration"]["validation"]
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9, "the temperature minimises validation NLL"


def test_temperature_scaling_calibrates_overconfident_logits():
    """Positive control of the fit: logits made 3x too confident come back near T = 3, with a lower ECE."""
    from ser_triton.train.calibration import fit_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4000)
    true_logits = rng.normal(size=(4000, 4))
    true_logits[np.arange(4000), labels] += 1.5
    drawn = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    temperature = fit_temperature(3 * true_logits, drawn)
    assert 2.6 < temperature < 3.4
    before, after = softmax(3 * true_logits), softmax(3 * true_logits / temperature)
    assert (before.argmax(1) == after.argmax(1)).all()
    assert expected_calibration_error(after, drawn) < 0.5 * expected_calibration_error(before, drawn)


def same_run(first: dict, second: dict) -> None:
    """The same epochs, losses, scores, temperature and weights (the timings aside)."""
    keep = ("epoch", "step", "checkpoint", "train_loss", "validation_loss", "validation_wa", "validation_ua")
    assert [{k: e[k] for k in keep} for e in first["curves"]] == [{k: e[k] for k in keep} for e in second["curves"]]
    assert first["test"]["ua"] == second["test"]["ua"] and first["calibration"] == second["calibration"]
    a, b = load_checkpoint(first["best_checkpoint"]), load_checkpoint(second["best_checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_run_is_identical(trained, corpus, cache, tmp_path):
    _, report = trained
    same_run(report, train(corpus, tmp_path / "again", cache))


def test_resume_goes_on_from_the_last_complete_epoch_to_the_same_result(trained, corpus, cache, tmp_path,
                                                                        monkeypatch):
    _, report = trained
    out = tmp_path / "interrupted"
    saved = loop.EpochFiles.on_save

    def interrupt_after_epoch_two(self, args, state, control, **kwargs):
        saved(self, args, state, control, **kwargs)
        if round(state.epoch) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop.EpochFiles, "on_save", interrupt_after_epoch_two)
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST]) == 130
    progress = json.loads((out / loop.RESUME / loop.PROGRESS).read_text())
    assert [e["epoch"] for e in progress["epochs"]] == [1, 2] and not (out / "training.json").exists()
    monkeypatch.setattr(loop.EpochFiles, "on_save", saved)
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST]) == 2, "a run is there: --resume"
    same_run(report, train(corpus, out, cache, "--resume"))
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST, "--resume", "--epochs", "4"]) == 2, \
        "--resume with other settings is refused"


def test_a_kill_leaves_the_last_complete_epoch_whole(corpus, cache, tmp_path):
    """SIGKILL at once after the first epoch is recorded: the record and its checkpoint read back, and
    --resume finishes the run."""
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ser_triton.train", str(corpus), "--out", str(out), "--cache", str(cache), *FAST,
               "--epochs", "6", "--patience", "6"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record = out / loop.RESUME / loop.PROGRESS
    try:
        deadline = time.monotonic() + 300
        while not record.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    progress = json.loads(record.read_text())
    assert progress["epochs"] and progress["epochs"][-1]["epoch"] >= 1
    load_checkpoint(out / progress["best_checkpoint"])
    assert (out / loop.RESUME / progress["last_checkpoint"] / "optimizer.pt").is_file()
    resumed = subprocess.run(command + ["--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((out / "training.json").read_text())
    assert [e["epoch"] for e in report["curves"]] == list(range(1, len(report["curves"]) + 1))
    assert not files.partial_files(out) and not files.partial_files(out / loop.RESUME)


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    """A writer killed half way: the file keeps its old content; the part it wrote is a partial file."""
    target = tmp_path / "progress.json"
    files.write_json(target, {"epoch": 1})
    script = (f"import os, time; from pathlib import Path; from ser_triton.train import files\n"
              f"def slow(path):\n    path.write_text('{{\"epoch\": ')\n    print('writing', flush=True)\n"
              f"    time.sleep(60)\nfiles.replace_atomically(Path({str(target)!r}), slow)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert len(files.partial_files(tmp_path)) == 1


def test_bad_input_is_one_line_before_any_training(corpus, cache, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST[:2], "--test-speakers", "nobody"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("ser-train: --test-speakers: nobody is not in the data; its speakers: s1, s2, s3, s4, s5")
    assert not out.exists()


def test_a_checkpoint_of_another_architecture_is_refused_before_training(trained, corpus, cache, tmp_path, capsys):
    _, report = trained
    state = load_checkpoint(report["best_checkpoint"])
    state["fc.weight"] = torch.zeros(7, state["fc.weight"].shape[1])
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    out = tmp_path / "refused"
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FAST, "--checkpoint", str(wrong)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not fit the fusion_head network" in error and "fc.weight" in error and "Traceback" not in error
    assert not out.exists()
    assert main([str(corpus), "--out", str(tmp_path / "goes-on"), "--cache", str(cache), *FAST, "--epochs", "1",
                 "--checkpoint", report["best_checkpoint"]]) == 0, "positive control: its own checkpoint goes on"
