"""ser-evaluate end to end against the real tiny server: the summary is what the predictions say."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from ser_triton.core.contract import LABELS, SAMPLE_RATE
from tests import iemocap_tree
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.server

DATA = REPO_ROOT / "samples"
SUMMARY_KEYS = {"wa", "ua", "macro_f1", "per_class", "confusion", "wer", "cer", "n_utterances", "n_skipped", "labels"}


def evaluate(*args, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, str(REPO_ROOT / "client" / "evaluate.py"), *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """The labelled sentences, the demo recording (no transcript), and five rows that cannot be used."""
    folder = tmp_path_factory.mktemp("manifest")
    for path in [*DATA.glob("sentence*.flac"), REPO_ROOT / "samples" / "speech.wav"]:
        shutil.copy(path, folder)
    (folder / "notes.wav").write_text("not audio\n")
    soundfile.write(folder / "click.wav", np.full(100, 0.1), SAMPLE_RATE)
    rows = (DATA / "labelled.csv").read_text().splitlines()
    rows += ["speech.wav,exc,", "absent.wav,sad,", "sentence1.flac,bored,", "sentence2.flac",
             "notes.wav,neu,", "click.wav,ang,"]
    (folder / "test.csv").write_text("\n".join(rows) + "\n")
    return folder / "test.csv"


@pytest.fixture(scope="module")
def compared(tiny_server, manifest, tmp_path_factory):
    """The served tiny ensemble over gRPC, compared with itself over HTTP."""
    out = tmp_path_factory.mktemp("compared")
    run = evaluate(manifest, "--url", tiny_server.grpc_url, "--compare", tiny_server.http_url,
                   "--compare-protocol", "http", "--out", out)
    assert run.returncode == 0, run.stderr
    return out, run


def test_summary_equals_what_the_predictions_give(compared):
    out, _ = compared
    summary = json.loads((out / "summary.json").read_text())
    predictions = read_jsonl(out / "predictions.jsonl")
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["labels"] == list(LABELS)
    gold = [p["gold_label"] for p in predictions]
    predicted = [p["predicted_label"] for p in predictions]
    assert summary["n_utterances"] == len(predictions) == 5
    assert summary["wa"] == pytest.approx(np.mean(np.array(gold) == np.array(predicted)))
    assert summary["confusion"]["counts"] == confusion_matrix(gold, predicted, labels=LABELS).tolist()
    assert summary["ua"] == pytest.approx(balanced_accuracy_score(gold, predicted))
    assert summary["wa_ci95"][0] <= summary["wa"] <= summary["wa_ci95"][1]
    assert {label: s["support"] for label, s in summary["per_class"].items()} == {
        "happy": 2, "sad": 1, "angry": 1, "neutral": 1}
    assert summary["n_with_reference_transcript"] == 4 and summary["wer"] is not None
    assert summary["throughput"]["utterances_per_s"] > 0


def test_predictions_are_the_served_answers_in_manifest_order(compared, manifest):
    out, _ = compared
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [f"sentence{i}.flac" for i in range(4)] + ["speech.wav"]
    assert [p["gold_label"] for p in predictions] == ["happy", "sad", "angry", "neutral", "happy"]
    assert predictions[1]["reference_transcript"] == "Please leave me alone, I have had a terrible week."
    assert predictions[4]["reference_transcript"] is None
    for p in predictions:
        assert list(p["probabilities"]) == list(LABELS)
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert p["predicted_label"] == max(p["probabilities"], key=p["probabilities"].get)
        assert p["file"] == str(manifest.parent / p["id"]) and p["transcript"]


def test_unusable_rows_are_skipped_with_reasons_and_named_on_stderr(compared):
    out, run = compared
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_skipped"] == 5
    assert summary["skipped"] == {"missing audio file": 1, "unknown label": 1, "malformed row": 1, "unusable audio": 2}
    skipped = read_jsonl(out / "skipped.jsonl")
    assert [s["source"] for s in skipped] == ["test.csv:7", "test.csv:8", "test.csv:9", "notes.wav", "click.wav"]
    assert "not a readable audio file" in skipped[3]["detail"] and "too short" in skipped[4]["detail"]
    problems = [line for line in run.stderr.splitlines() if line.startswith(("test.csv:", "notes.wav", "click.wav"))]
    assert len(problems) == 5


def test_compare_of_the_server_with_itself_agrees(compared):
    out, _ = compared
    comparison = json.loads((out / "summary.json").read_text())["comparisons"]["compare"]
    assert comparison["system"]["protocol"] == "http"
    agreement = comparison["agreement"]
    assert agreement["n_utterances"] == 5
    assert agreement["label_agreement"] == 1.0 and agreement["transcript_cer"] == 0.0
    assert agreement["max_probability_diff"] < 1e-4
    assert agreement["delta"]["wa"]["value"] == 0.0 and agreement["delta"]["wer"]["value"] == 0.0
    other = read_jsonl(out / "predictions.compare.jsonl")
    assert [p["id"] for p in other] == [p["id"] for p in read_jsonl(out / "predictions.jsonl")]


def test_report_files(compared):
    out, run = compared
    image = matplotlib.image.imread(out / "confusion.png")
    assert image.shape[1] > image.shape[0] > 300, "two confusion panels side by side"
    markdown = (out / "summary.md").read_text()
    assert run.stdout == markdown
    assert "| served (" in markdown and "| compare (" in markdown and "## Confusion" in markdown


def test_reference_agrees_with_the_served_tiny_ensemble(tiny_server, manifest, tmp_path):
    run = evaluate(manifest, "--url", tiny_server.grpc_url, "--reference", "--preset", "tiny", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "NO CHECKPOINT" in run.stderr
    reference = json.loads((tmp_path / "summary.json").read_text())["comparisons"]["reference"]
    assert reference["system"]["kind"] == "pytorch" and reference["system"]["model"]["preset"] == "tiny"
    agreement = reference["agreement"]
    assert agreement["n_utterances"] == 5
    assert agreement["label_agreement"] == 1.0 and agreement["transcript_agreement"] == 1.0
    assert agreement["max_probability_diff"] < 1e-4


def test_an_iemocap_fold_lands_in_the_default_folder(tiny_server, tmp_path):
    release = iemocap_tree.build(tmp_path)
    run = evaluate(release, "--sessions", "1", "--url", tiny_server.grpc_url, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "evaluation_results" / "IEMOCAP_full_release-session1"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_utterances"] == 3
    assert summary["skipped"] == {"IEMOCAP category fru (frustration) is left out": 1,
                                  "missing audio file": 1,
                                  "IEMOCAP category xxx (no majority) is left out": 1}
    assert [p["id"] for p in read_jsonl(out / "predictions.jsonl")] == [
        "Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M002"]
    assert "skipped 1 row: IEMOCAP category fru (frustration) is left out" in run.stderr


def test_an_unreachable_compare_server_is_one_line(tiny_server, manifest, tmp_path):
    run = evaluate(manifest, "--url", tiny_server.grpc_url, "--compare", "127.0.0.1:1", "--retries", "0",
                   "--out", tmp_path)
    assert run.returncode == 1
    last = run.stderr.splitlines()[-1]
    assert last.startswith("cannot reach the SER server at 127.0.0.1:1 over grpc")
    assert not (tmp_path / "summary.json").exists()


def test_a_labelled_call_scores_each_party_on_its_own_channel(tiny_server, sentences, tmp_path):
    """A manifest row per party of a stereo call (its channel column): each row is that channel's audio
    alone, as the library gives it; a row whose channel is no number is skipped, said."""
    from ser_triton.client.library import SERClient

    size = max(s.size for s in sentences[:2])
    call = np.stack([np.pad(sentences[0], (0, size - sentences[0].size)),
                     np.pad(sentences[1], (0, size - sentences[1].size))], axis=1)
    soundfile.write(tmp_path / "call.wav", call, SAMPLE_RATE, subtype="FLOAT")
    (tmp_path / "calls.csv").write_text("path,label,channel\ncall.wav,happy,1\ncall.wav,sad,2\ncall.wav,sad,left\n")
    run = evaluate(tmp_path / "calls.csv", "--url", tiny_server.grpc_url, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    predictions = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [p["channel"] for p in predictions] == [1, 2] and "channel 'left' is no channel number" in run.stderr
    with SERClient(tiny_server.grpc_url) as client:
        for prediction, channel in zip(predictions, (0, 1)):
            alone = client.classify(call[:, channel], sample_rate=SAMPLE_RATE)
            assert prediction["transcript"] == alone.transcript
            np.testing.assert_allclose(list(prediction["probabilities"].values()), list(alone.probabilities.values()),
                                       atol=1e-5)
