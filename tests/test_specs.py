"""core.specs is the one declaration: names agree everywhere, and nothing depends on tensor order."""

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from ser_triton.export import repository
from ser_triton.core.model_config import read_config

from ser_triton.core import specs
from ser_triton.export.pipeline import ExportOptions, export
from ser_triton.core.glossary import NETWORKS
from ser_triton.model.networks import WRAPPERS
from tests.conftest import REPO_ROOT, start_server
from tests.server_helpers import connect, infer, utterance


@pytest.fixture(scope="module")
def all_specs(tiny_components):
    return specs.model_specs(specs.Sizes.of(tiny_components))


def test_a_tensor_name_means_one_tensor(all_specs):
    seen = {}
    for spec in all_specs.values():
        for tensor in spec.inputs + spec.outputs:
            assert seen.setdefault(tensor.name, tensor) == tensor, tensor.name


def test_python_steps_find_each_tensor_by_a_unique_role(all_specs):
    for name in specs.PYTHON_STEPS:
        for tensors in (all_specs[name].inputs, all_specs[name].outputs):
            roles = [t.role for t in tensors]
            assert len(roles) == len(set(roles)), (name, roles)


def test_every_variable_axis_says_what_it_counts(all_specs):
    for spec in all_specs.values():
        for tensor in spec.inputs + spec.outputs:
            if specs.VARIABLE in tensor.dims or tensor.is_length:
                assert tensor.axis in (specs.SAMPLES, specs.FRAMES, specs.TOKENS), (spec.name, tensor.name)


def test_the_glossary_names_every_network_once():
    assert specs.ONNX_NETWORKS == tuple(n.name for n in NETWORKS)
    assert set(WRAPPERS) == set(specs.ONNX_NETWORKS)
    prefixes = [p for n in NETWORKS for p in n.checkpoint_prefixes]
    assert len(prefixes) == len(set(prefixes))


def reversed_specs(sizes):
    """Every model's inputs and outputs in the opposite order."""
    return {name: dataclasses.replace(spec, inputs=spec.inputs[::-1], outputs=spec.outputs[::-1])
            for name, spec in ORIGINAL(sizes).items()}


ORIGINAL = specs.model_specs


@pytest.mark.server
def test_reordered_tensors_still_give_the_reference_answers(tmp_path, monkeypatch, tiny_components, tiny_reference):
    """Steps read by role and networks take inputs by name: reversing every model's inputs and
    outputs in the specs changes the configs and nothing that is served."""
    monkeypatch.setattr(specs, "model_specs", reversed_specs)
    out = tmp_path / "repository"
    export(ExportOptions(out=out, preset="tiny"), tiny_components)
    text_ids = read_config(out / specs.TEXT_ENCODER / "config.pbtxt").input
    assert [t.name for t in text_ids] == ["attention_mask", "input_ids"]  # the order really changed
    onnx_inputs = [i.name for i in onnx.load(str(repository.network_file(out, specs.TEXT_ENCODER))).graph.input]
    assert onnx_inputs == ["input_ids", "attention_mask"]  # the network's own argument order
    with start_server(out) as server:
        client = connect(server, "grpc")
        for seconds, seed in ((0.7, 1), (2.4, 2)):
            audio = utterance(seconds, seed)
            emotions, probabilities, transcripts = infer(client, "grpc", audio[None])
            expected, transcript = tiny_reference.predict(audio)
            np.testing.assert_allclose(probabilities[0], expected, atol=1e-4)
            assert transcripts == [transcript]


def test_a_network_whose_signature_disagrees_with_the_specs_is_refused(tmp_path, tiny_components, all_specs):
    from ser_triton.export.errors import ExportError
    from ser_triton.export.examples import example_inputs
    from ser_triton.export.onnx_export import export_network
    from ser_triton.model.networks import served_network

    spec = all_specs[specs.TEXT_ENCODER]
    renamed = dataclasses.replace(spec, outputs=(dataclasses.replace(spec.outputs[0], name="bert_features"),))
    with pytest.raises(ExportError, match=r"text_encoder: TextEncoder has outputs \['text_features'\], but "
                                          r"core/specs.py declares \['bert_features'\]") as refused:
        export_network(served_network(tiny_components, specs.TEXT_ENCODER), renamed,
                       example_inputs(spec, specs.Sizes.of(tiny_components))[0], tmp_path / "text.onnx")
    declaring = str(refused.value).split(" declares")[0].split()[-1]
    assert (REPO_ROOT / declaring).resolve() == Path(specs.__file__).resolve()  # the file to open is the one
