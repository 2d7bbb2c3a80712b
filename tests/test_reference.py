"""The PyTorch reference against an independent re-implementation of the research forward pass."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

from ser_triton.core.audio import load_audio
from ser_triton.core.contract import LABELS
from tests.conftest import REPO_ROOT


def research_forward(c, audio: np.ndarray):
    """model.md, written out with plain tensor ops on the state_dict (no FusionHead code)."""
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    x = torch.from_numpy(x.astype(np.float32))[None]
    with torch.no_grad():
        ids = c.asr(x).logits.argmax(-1)
        transcript = c.ctc_tokenizer.batch_decode(ids)[0]
        tokens = c.bert_tokenizer(transcript, truncation=True, return_tensors="pt")
        xl = c.text_encoder(**tokens).last_hidden_state
        xa = c.acoustic_encoder(x).last_hidden_state
        w = c.fusion_head.state_dict()
        lin = lambda t, name: F.linear(t, w[f"{name}.weight"], w[f"{name}.bias"])  # noqa: E731
        xl = lin(xl, "proj_bert")
        d = xa.shape[-1]
        q, k, v = (lambda t: lin(t, "cmg.q_proj")), (lambda t: lin(t, "cmg.k_proj")), (lambda t: lin(t, "cmg.v_proj"))
        ca = torch.softmax(q(xa) @ k(xl).transpose(1, 2) / d ** 0.5, -1) @ v(xl)
        cl = torch.softmax(q(xl) @ k(xa).transpose(1, 2) / d ** 0.5, -1) @ v(xa)
        g = torch.sigmoid(lin(torch.cat([xa, ca], -1), "cmg.temporal_fusion.transform"))
        h = torch.sigmoid(lin(torch.cat([xl, cl], -1), "cmg.temporal_fusion.transform"))
        fa, fl = xa * g + ca * (1 - g), xl * h + cl * (1 - h)
        logits = lin(torch.cat([fa.mean(1), fl.mean(1)], -1), "fc")
    return torch.softmax(logits, -1)[0].numpy(), transcript


@pytest.mark.parametrize("seconds", [0.3, 1.7, 4.2])
def test_reference_matches_the_research_forward_pass(tiny_reference, tiny_components, seconds):
    rng = np.random.default_rng(int(seconds * 10))
    audio = (0.2 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    probabilities, transcript = tiny_reference.predict(audio)
    expected_probabilities, expected_transcript = research_forward(tiny_components, audio)
    assert transcript == expected_transcript
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=1e-6)


def test_reference_cli_prints_the_client_json_keys(tmp_path):
    t = np.arange(int(22050 * 1.5)) / 22050
    path = tmp_path / "tone.flac"
    soundfile.write(path, np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 310 * t)], 1) * 0.3, 22050)
    done = subprocess.run([sys.executable, "-m", "ser_triton.model.reference", str(path), "--preset", "tiny", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"file", "label", "probabilities", "transcript"} <= line.keys()
    assert list(line["probabilities"]) == list(LABELS)
    assert line["label"] == max(line["probabilities"], key=line["probabilities"].get)
    assert "untrained" in done.stderr.lower() or "no checkpoint" in done.stderr.lower()


def test_reference_loads_audio_like_the_client(tmp_path, tiny_reference):
    """Same samples through core.audio, whatever the file's rate and channels."""
    rng = np.random.default_rng(3)
    stereo = (0.1 * rng.standard_normal((44100, 2))).astype(np.float32)
    path = tmp_path / "noise.wav"
    soundfile.write(path, stereo, 44100)
    audio = load_audio(path)
    assert audio.shape == (16000,)
    result = tiny_reference.classify(audio, str(path))
    direct, _ = tiny_reference.predict(audio)
    np.testing.assert_allclose([result.probabilities[label] for label in LABELS], direct, atol=1e-7)
