"""ser-train's recipes and data paths: the frozen recipe's memory-mapped cache, folds, --text reference,
skipped files, and the random crops and text dropout of the training clips."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import SAMPLE_RATE
from ser_triton.model.checkpoint import load_checkpoint
from ser_triton.model.networks import AcousticEncoder
from ser_triton.model.sources import ModelBuilder
from ser_triton.train import features
from ser_triton.train.__main__ import main
from ser_triton.train.batches import ClipDataset
from ser_triton.train.clips import Clip
from ser_triton.evaluation.datasets import Utterance
from ser_triton.train.recipes import RECIPES
from tests import train_corpus

corpus, cache = train_corpus.corpus, train_corpus.cache  # the shared fixtures, by their names

FROZEN = ["--preset", "tiny", "--recipe", "frozen", "--batch-size", "8", "--epochs", "4", "--patience", "4",
          "--threads", "1", "--bootstrap", "50"]


def train(corpus, out, cache, *extra) -> dict:
    assert main([str(corpus), "--out", str(out), "--cache", str(cache), *FROZEN, *extra]) == 0
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def frozen(corpus, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen")
    return out, train(corpus, out, cache, "--test-speakers", "s5", "--val-speakers", "s4")


def test_the_frozen_recipe_caches_the_served_encoders_outputs_memory_mapped(frozen, cache):
    out, report = frozen
    assert report["recipe"]["name"] == "frozen" and report["throughput"]["caching_features_seconds"] is not None
    (entry,) = (cache / "features").iterdir()
    stored = features.FeatureCache(entry)
    assert isinstance(stored.acoustic, np.memmap) and isinstance(stored.text, np.memmap)
    prediction = json.loads((out / "test_predictions.jsonl").read_text().splitlines()[0])
    audio = load_audio(prediction["file"])
    with torch.no_grad():
        served, _ = AcousticEncoder(ModelBuilder("tiny").network("acoustic_encoder"))(
            torch.from_numpy(audio)[None], torch.tensor([audio.size]))
    key = next(k for k in stored.rows if k.startswith(features.hashlib.sha256(Path(prediction["file"]).read_bytes())
                                                      .hexdigest()[:32]))
    start, frames, _, _ = stored.rows[key]
    assert np.array_equal(stored.acoustic[start:start + frames], served[0].numpy())


def test_frozen_encoders_are_the_presets_and_only_the_head_trained(frozen):
    _, report = frozen
    trained = load_checkpoint(report["best_checkpoint"])
    builder = ModelBuilder("tiny")
    for prefix, network in (("hubert.", "acoustic_encoder"), ("bert.", "text_encoder")):
        for key, value in builder.network(network).state_dict().items():
            assert torch.equal(trained[prefix + key], value), key
    head = builder.network("fusion_head").state_dict()
    assert not torch.equal(trained["cmg.q_proj.weight"], head["cmg.q_proj.weight"])


def test_a_second_run_reads_the_cache_and_never_runs_the_encoders(frozen, corpus, cache, tmp_path, monkeypatch):
    class Refused:
        def __init__(self, *args):
            raise AssertionError("the encoders ran again although their outputs are cached")

    monkeypatch.setattr(features, "AcousticEncoder", Refused)
    again = train(corpus, tmp_path / "again", cache, "--test-speakers", "s5", "--val-speakers", "s4")
    assert again["test"]["ua"] == frozen[1]["test"]["ua"]


def test_folds_report_each_fold_and_their_mean_and_spread(corpus, cache, tmp_path):
    summary = train(corpus, tmp_path / "folds", cache, "--folds", "sessions", "--epochs", "2")
    assert [fold["split"] for fold in summary["folds"]] == ["fold-1", "fold-2", "fold-3"]
    reports = [json.loads((tmp_path / "folds" / f"fold-{i}" / "training.json").read_text()) for i in (1, 2, 3)]
    assert [r["split"]["speakers"]["test"] for r in reports] == [["s1", "s2"], ["s3", "s4"], ["s5"]]
    uas = [r["test"]["ua"] for r in reports]
    assert summary["test"]["ua"] == pytest.approx(np.mean(uas))
    assert summary["test"]["ua_std"] == pytest.approx(np.std(uas, ddof=1))


def test_reference_text_trains_on_the_datas_text_and_says_so(corpus, cache, tmp_path):
    report = train(corpus, tmp_path / "reference", cache, "--test-speakers", "s5", "--val-speakers", "s4",
                   "--text", "reference", "--epochs", "2")
    assert report["data"]["text"] == "reference"
    assert "reference text" in (tmp_path / "reference" / "MODEL_CARD.md").read_text()


def test_unusable_files_are_skipped_one_line_each_and_counted(corpus, cache, tmp_path, capsys):
    folder = tmp_path / "data"
    manifest = train_corpus.build(folder)
    (folder / "broken.wav").write_text("not audio")
    soundfile.write(folder / "long.flac", np.zeros(SAMPLE_RATE * 3, np.float32), SAMPLE_RATE)
    with manifest.open("a") as rows:
        rows.write("broken.wav,sad,s1,1,x\nlong.flac,sad,s2,1,y\n")
    report = train(manifest, tmp_path / "out", cache, "--test-speakers", "s5", "--val-speakers", "s4",
                   "--epochs", "1", "--max-seconds", "2")
    assert report["data"]["skipped"] == {"unusable audio": 1, "too long": 1}
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("broken.wav: unusable audio (not a readable audio file") for line in lines)
    assert any(line.startswith("long.flac: too long (3.0 s, longer than --max-seconds 2)") for line in lines)
    assert "Skipped: 2 (unusable audio: 1, too long: 1)." in (tmp_path / "out" / "MODEL_CARD.md").read_text()


def test_crops_and_text_dropout_depend_on_the_seed_epoch_and_clip_only(tmp_path):
    audio = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    soundfile.write(tmp_path / "a.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    clips = [Clip(Utterance(str(i), tmp_path / "a.wav", "sad"), "k", SAMPLE_RATE, "words",
                  np.array([101, 7, 102]), 1.0) for i in range(8)]
    empty = np.array([101, 102])

    def draw(epoch, seed=0):
        dataset = ClipDataset(clips, "asr", empty, crop_seconds=0.25, text_dropout=0.5, seed=seed)
        dataset.set_epoch(epoch)
        return [dataset[i] for i in range(len(clips))]

    first, again, later, other = draw(0), draw(0), draw(1), draw(0, seed=1)
    assert all(item["waveform"].size == SAMPLE_RATE // 4 for item in first)
    starts = [[float(item["waveform"][0]) for item in items] for items in (first, again, later, other)]
    assert starts[0] == starts[1] and starts[0] != starts[2] and starts[0] != starts[3]
    dropped = [len(item["input_ids"]) == 2 for item in first]
    assert 0 < sum(dropped) < len(clips) and dropped == [len(item["input_ids"]) == 2 for item in again]
    whole = ClipDataset(clips, "asr", empty)[0]
    assert whole["waveform"].size == SAMPLE_RATE and list(whole["input_ids"]) == [101, 7, 102]
    assert np.array_equal(whole["waveform"], audio), "validation and test clips are the audio as it is"
    augmented = ClipDataset(clips, "asr", empty, noise=0.99, speed=0.1, seed=3)
    lengths = {augmented[i]["waveform"].size for i in range(len(clips))}
    assert len(lengths) > 1 and all(0.9 * SAMPLE_RATE <= n <= SAMPLE_RATE / 0.9 for n in lengths)
    noisy = augmented[0]["waveform"]
    assert np.array_equal(noisy, augmented[0]["waveform"]) and np.abs(np.diff(noisy)).max() > 10 / SAMPLE_RATE


def test_recipes_that_make_no_sense_are_refused(corpus, cache, tmp_path, capsys):
    assert RECIPES["frozen"].problems() == [] and RECIPES["scratch"].problems() == []
    assert main([str(corpus), "--out", str(tmp_path / "x"), "--cache", str(cache), "--preset", "tiny",
                 "--test-speakers", "s5", "--recipe", "scratch", "--cached-features"]) == 2
    assert "--cached-features runs the encoders once" in capsys.readouterr().err


def test_text_branch_off_makes_the_answer_independent_of_the_transcript(corpus, cache, tmp_path):
    """proj_bert.weight zero and frozen: any transcript gives the same logits, and the checkpoint is still
    the research format (a zero matrix under its own name)."""
    from ser_triton.train.network import ResearchModel

    model = ResearchModel.build(ModelBuilder("tiny"))
    model.freeze(False, "off")
    acoustic = torch.randn(1, 40, 32)
    logits = [model(attention_mask=torch.ones(1, length, dtype=torch.int64), acoustic_features=acoustic,
                    acoustic_frames=torch.tensor([40]), text_features=torch.randn(1, length, 32))["logits"]
              for length in (3, 9)]
    assert torch.allclose(logits[0], logits[1], atol=1e-6)
    report = train(corpus, tmp_path / "off", cache, "--test-speakers", "s5", "--val-speakers", "s4", "--epochs", "2",
                   "--text-branch", "off")
    state = load_checkpoint(report["best_checkpoint"])
    assert report["recipe"]["text_branch"] == "off" and not state["proj_bert.weight"].any()
    assert state["proj_bert.bias"].any()
    fresh = ResearchModel.build(ModelBuilder("tiny"))
    different = [fresh(attention_mask=torch.ones(1, length, dtype=torch.int64), acoustic_features=acoustic,
                       acoustic_frames=torch.tensor([40]), text_features=torch.randn(1, length, 32))["logits"]
                 for length in (3, 9)]
    assert not torch.allclose(different[0], different[1], atol=1e-6), "positive control: the text moves a fresh head"


def test_the_small_preset_has_a_group_normed_front_end_that_pads_exactly():
    """small: tiny with a 6-layer front end whose first layer is GroupNorm'ed (its statistics over each
    utterance's valid frames, model.networks): a padded batch gives each utterance what it gives alone."""
    small, tiny = (ModelBuilder(preset).network("acoustic_encoder") for preset in ("small", "tiny"))
    assert isinstance(small.feature_extractor.conv_layers[0].layer_norm, torch.nn.GroupNorm)
    assert len(small.feature_extractor.conv_layers) == 6 and small.config.hidden_size == tiny.config.hidden_size
    encoder = AcousticEncoder(small)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (8000, 13000)]
    batch = torch.zeros(2, 13000)
    for row, clip in enumerate(clips):
        batch[row, : clip.size] = torch.from_numpy(clip)
    with torch.no_grad():
        padded, frames = encoder(batch, torch.tensor([c.size for c in clips]))
        for row, clip in enumerate(clips):
            alone, _ = encoder(torch.from_numpy(clip)[None], torch.tensor([clip.size]))
            assert frames[row] == alone.shape[1] > 0
            assert (padded[row, : frames[row]] - alone[0]).abs().max() < 1e-5
