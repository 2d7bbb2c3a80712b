"""Research checkpoints: the three saved shapes load, and every mismatch is named."""

import pickle

import pytest
import torch

from ser_triton.core.glossary import NETWORKS
from ser_triton.model import checkpoint, sources
from ser_triton.model.checkpoint import load_checkpoint, split_state_dict
from ser_triton.model.errors import CheckpointError
from ser_triton.model.sources import build_components


def research_state_dict(components) -> dict:
    """What `torch.save(model.state_dict())` of the research EnhancedSERModel holds."""
    state = {f"hubert.{k}": v for k, v in components.acoustic_encoder.state_dict().items()}
    state.update({f"bert.{k}": v for k, v in components.text_encoder.state_dict().items()})
    state.update(components.fusion_head.state_dict())
    return {k: v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def trained_state():
    """A 'fine-tuned' tiny model: different seed, so every weight differs from the fresh one."""
    return research_state_dict(build_components("tiny", seed=7))


@pytest.mark.parametrize("wrap", ["flat", "model_state_dict", "module_prefix"])
def test_checkpoint_shapes_load_and_replace_every_weight(tmp_path, trained_state, wrap):
    state = {
        "flat": trained_state,
        "model_state_dict": {"model_state_dict": trained_state, "epoch": 3},
        "module_prefix": {f"module.{k}": v for k, v in trained_state.items()},
    }[wrap]
    path = tmp_path / "hubert_epoch_3_valacc_75.27.pt"
    torch.save(state, path)
    components = build_components("tiny", checkpoint=path)
    assert components.head_trained
    reloaded = research_state_dict(components)
    assert reloaded.keys() == trained_state.keys()
    for key, value in trained_state.items():
        assert torch.equal(reloaded[key], value), key


def test_split_routes_prefixes(trained_state):
    parts = split_state_dict(trained_state)
    assert set(parts) == {"acoustic_encoder", "text_encoder", "fusion_head"}
    assert all(not k.startswith("hubert.") for k in parts["acoustic_encoder"])
    assert "embeddings.word_embeddings.weight" in parts["text_encoder"]
    assert {k.split(".")[0] for k in parts["fusion_head"]} == {"cmg", "proj_bert", "fc"}


def build_with(tmp_path, state):
    """The model from a checkpoint holding `state`, as the export and the reference build it."""
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    return build_components("tiny", checkpoint=path)


def test_missing_keys_are_named(tmp_path, trained_state):
    state = dict(trained_state)
    del state["cmg.q_proj.weight"], state["bert.encoder.layer.0.output.dense.bias"]
    with pytest.raises(CheckpointError) as error:
        build_with(tmp_path, state)
    assert "missing" in str(error.value)
    assert "bert.encoder.layer.0.output.dense.bias" in str(error.value) or "cmg.q_proj.weight" in str(error.value)


def test_unexpected_keys_are_named(tmp_path, trained_state):
    with pytest.raises(CheckpointError, match="unexpected keys.*classifier.weight"):
        build_with(tmp_path, {**trained_state, "classifier.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected.*hubert.extra.weight"):
        build_with(tmp_path, {**trained_state, "hubert.extra.weight": torch.zeros(1)})


def test_misshaped_keys_name_both_shapes(tmp_path, trained_state):
    state = {**trained_state, "fc.weight": torch.zeros(7, trained_state["fc.weight"].shape[1])}
    with pytest.raises(CheckpointError, match=r"mis-shaped: fc.weight \(checkpoint \(7, 64\), model \(4, 64\)\)"):
        build_with(tmp_path, state)


def test_a_failed_checkpoint_loads_no_weights(tmp_path, monkeypatch, trained_state):
    """All or nothing: every network's part is checked before any network is built or loaded."""
    built, loaded = [], []
    real_network, real_load = sources.ModelBuilder.network, checkpoint.load_network_weights
    monkeypatch.setattr(sources.ModelBuilder, "network",
                        lambda self, name: built.append(name) or real_network(self, name))
    monkeypatch.setattr(checkpoint, "load_network_weights",
                        lambda module, name, state: loaded.append(name) or real_load(module, name, state))
    with pytest.raises(CheckpointError):
        build_with(tmp_path, {**trained_state, "fc.bias": torch.zeros(9)})
    assert built == [] and loaded == []
    build_with(tmp_path, trained_state)  # the hooks see a checkpoint that fits
    assert built == loaded == [network.name for network in NETWORKS]


class Exploit:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"fc.weight": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path)


def test_missing_and_non_tensor_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"fc.weight": [1, 2]}, tmp_path / "lists.pt")
    with pytest.raises(CheckpointError, match="not a state_dict of tensors"):
        load_checkpoint(tmp_path / "lists.pt")
