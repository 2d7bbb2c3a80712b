"""Past one process: torchrun (DDP, gloo on CPUs) trains what one process trains; --device cuda runs bf16.

Two processes with half the batch each see, at every step, the clips one process sees in its batch:
the same sampler order, whole global batches, and a loss that is the batch's mean, so the gradients
are the same sums in another order. With the randomness that differs per process turned off
(encoder dropout, LayerDrop and SpecAugment: --encoder-dropout 0), the curves agree within
TOLERANCE (float32 sums in another order, over a few epochs); with it on they agree only in
distribution.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ser_triton.model.checkpoint import load_checkpoint
from tests import train_corpus
from tests.conftest import REPO_ROOT

TOLERANCE = 1e-4
"""Largest difference allowed between one process and two: losses, validation scores, weights."""

SETTINGS = ["--preset", "tiny", "--test-speakers", "s5", "--val-speakers", "s4", "--batch-size", "4",
            "--epochs", "3", "--patience", "3", "--crop-seconds", "0.4", "--encoder-dropout", "0",
            "--threads", "1", "--bootstrap", "50"]


def run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_two_processes_train_what_one_process_trains(tmp_path):
    corpus = train_corpus.build(tmp_path / "corpus")
    cache = tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, "-m", "ser_triton.train", str(corpus), "--out", str(one), "--cache", str(cache), *SETTINGS])
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ser_triton.train", str(corpus), "--out", str(two), "--cache", str(cache), *SETTINGS])
    single, ddp = (json.loads((out / "training.json").read_text()) for out in (one, two))
    assert single["processes"] == 1 and ddp["processes"] == 2
    assert [e["step"] for e in single["curves"]] == [e["step"] for e in ddp["curves"]], "the same optimizer steps"
    for key in ("train_loss", "validation_loss", "validation_wa", "validation_ua"):
        a, b = (np.array([e[key] for e in report["curves"]]) for report in (single, ddp))
        assert np.abs(a - b).max() <= TOLERANCE, (key, a, b)
    assert single["best_epoch"] == ddp["best_epoch"]
    first, second = (load_checkpoint(report["best_checkpoint"]) for report in (single, ddp))
    assert max(float((first[k] - second[k]).abs().max()) for k in first) <= TOLERANCE
    assert single["curves"][0]["train_loss"] != single["curves"][-1]["train_loss"], \
        "it trained"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="--device cuda needs an NVIDIA GPU, and this machine has "
                                                         "none that PyTorch sees")
def test_cuda_trains_with_bf16_autocast(tmp_path):
    corpus = train_corpus.build(tmp_path / "corpus")
    out = tmp_path / "cuda"
    run([sys.executable, "-m", "ser_triton.train", str(corpus), "--out", str(out), "--cache", str(tmp_path / "cache"),
         *SETTINGS, "--device", "cuda"])
    report = json.loads((out / "training.json").read_text())
    assert report["device"] == "cuda" and len(report["curves"]) == 3
    assert all(tensor.dtype == torch.float32 for tensor in load_checkpoint(report["best_checkpoint"]).values()), \
        "bf16 is autocast: the weights stay float32, as the research format has them"
