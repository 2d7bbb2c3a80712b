"""Write the Triton model repository: one model per network, the Python steps, the ensemble.

Every config.pbtxt is built as a `ModelConfig` protobuf from `export.specs`, the same
declarations the ONNX export used, for one of three targets:
- cpu:         ONNX networks run by ONNX Runtime inside Python-backend models (the tritonserver
               bundled in the nvidia-pytriton wheel has no onnxruntime backend); ragged batching.
- onnxruntime: native onnxruntime backend on GPU instances (Triton containers).
- tensorrt:    TensorRT plans built from the ONNX files (GPU only).
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from client import contract
from export import specs

TARGETS = ("cpu", "onnxruntime", "tensorrt")
STEPS_PACKAGE = Path(__file__).resolve().parent.parent / "serving" / "steps"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
VERSION = "1"
TOKENIZER_FILE = "tokenizer.json"
CTC_VOCAB_FILE = "ctc_vocab.json"

DTYPES = {"float32": mc.TYPE_FP32, "int64": mc.TYPE_INT64, "bytes": mc.TYPE_STRING}
STEP_MODULES = {
    specs.AUDIO_INPUT: "audio_input",
    specs.CTC_TOKENIZE: "ctc_tokenize",
    specs.EMOTION_LABEL: "emotion_label",
}


@dataclass
class Deployment:
    """The knobs of a deployment; the defaults suit the local 2-core CPU server."""

    target: str = "cpu"
    max_batch_size: int = 8
    queue_delay_us: int = 0
    """No added wait: on 2 cores a bigger batch buys little, and requests that queue while a
    network is busy are batched anyway."""
    network_threads: int = 1
    """One ONNX Runtime thread per network: the two encoders run in parallel, one per core."""
    max_audio_seconds: float = contract.MAX_SECONDS
    instances: int = 1
    padding_slack: float = 0.25
    """cpu target: requests are batched together only while padding adds at most this much work."""


def tensor_config(message, tensor: specs.TensorSpec, native: bool, ragged: bool):
    message.name = tensor.name
    message.data_type = DTYPES[tensor.dtype]
    message.dims.extend([1] if tensor.is_length else list(tensor.dims))
    if tensor.is_length and native:
        message.reshape.SetInParent()  # dims [1] seen by the network as a [batch] vector
    if ragged and specs.VARIABLE in tensor.dims:
        message.allow_ragged_batch = True


def model_config(spec: specs.ModelSpec, deployment: Deployment) -> mc.ModelConfig:
    is_network = spec.name in specs.ONNX_NETWORKS
    native = is_network and deployment.target != "cpu"
    config = mc.ModelConfig(name=spec.name, max_batch_size=deployment.max_batch_size)
    for tensor in spec.inputs:
        tensor_config(config.input.add(), tensor, native, ragged=not native)
    for tensor in spec.outputs:
        tensor_config(config.output.add(), tensor, native, ragged=False)
    config.dynamic_batching.max_queue_delay_microseconds = deployment.queue_delay_us if is_network else 0
    group = config.instance_group.add(count=deployment.instances)
    group.kind = mc.ModelInstanceGroup.KIND_GPU if native else mc.ModelInstanceGroup.KIND_CPU
    if deployment.target == "tensorrt" and is_network:
        config.backend, config.default_model_filename = "tensorrt", PLAN_FILE
    elif native:
        config.backend, config.default_model_filename = "onnxruntime", ONNX_FILE
    else:
        config.backend = "python"
    if not is_network:
        parameters = step_parameters(spec, deployment)
    elif not native:
        parameters = network_parameters(spec, deployment)
    else:
        parameters = {}
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def network_parameters(spec: specs.ModelSpec, deployment: Deployment) -> dict[str, str]:
    return {
        "onnx_file": ONNX_FILE,
        "intra_op_threads": str(deployment.network_threads),
        "padding_slack": str(deployment.padding_slack),
        "valid_lengths": json.dumps({t.name: t.valid_length for t in spec.outputs if t.valid_length}),
    }


def step_parameters(spec: specs.ModelSpec, deployment: Deployment) -> dict[str, str]:
    if spec.name == specs.AUDIO_INPUT:
        return {"sample_rate": str(contract.SAMPLE_RATE), "min_samples": str(contract.MIN_SAMPLES),
                "max_audio_seconds": str(deployment.max_audio_seconds)}
    if spec.name == specs.CTC_TOKENIZE:
        return {"tokenizer_file": TOKENIZER_FILE, "ctc_vocab_file": CTC_VOCAB_FILE}
    if spec.name == specs.EMOTION_LABEL:
        return {"labels": json.dumps(list(contract.LABELS))}
    raise KeyError(spec.name)


def ensemble_config(all_specs: dict[str, specs.ModelSpec], deployment: Deployment) -> mc.ModelConfig:
    config = mc.ModelConfig(name=contract.ENSEMBLE, platform="ensemble",
                            max_batch_size=deployment.max_batch_size)
    renamed = {(step, tensor): outer for outer, (step, tensor) in {**specs.ENSEMBLE_INPUTS, **specs.ENSEMBLE_OUTPUTS}.items()}
    for outer, (step, tensor) in specs.ENSEMBLE_INPUTS.items():
        tensor_config(config.input.add(), all_specs[step].tensor(tensor), False, False)
        config.input[-1].name = outer
    for outer, (step, tensor) in specs.ENSEMBLE_OUTPUTS.items():
        tensor_config(config.output.add(), all_specs[step].tensor(tensor), False, False)
        config.output[-1].name = outer
    produced = {t.name: renamed.get((spec.name, t.name), t.name)
                for spec in all_specs.values() for t in spec.outputs}
    consumed = {t.name for spec in all_specs.values() for t in spec.inputs}
    for spec in all_specs.values():
        step = config.ensemble_scheduling.step.add(model_name=spec.name, model_version=-1)
        for tensor in spec.inputs:
            step.input_map[tensor.name] = renamed.get((spec.name, tensor.name), produced.get(tensor.name))
        for tensor in spec.outputs:
            if tensor.name in consumed or (spec.name, tensor.name) in renamed:
                step.output_map[tensor.name] = produced[tensor.name]
    return config


def write_config(config: mc.ModelConfig, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.pbtxt").write_text(text_format.MessageToString(config))


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def install_step(directory: Path, module: str) -> None:
    """`1/model.py` plus a copy of the steps package, so the model directory stands alone."""
    version = directory / VERSION
    version.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(version / "steps", ignore_errors=True)
    shutil.copytree(STEPS_PACKAGE, version / "steps", ignore=shutil.ignore_patterns("__pycache__"))
    (version / "model.py").write_text(
        f'"""Generated by `make export`; the code lives in steps/{module}.py."""\n'
        f"from steps.{module} import TritonPythonModel  # noqa: F401\n"
    )


def write_repository(root: Path, all_specs: dict[str, specs.ModelSpec], deployment: Deployment) -> None:
    """Configs and Python code for every model; the networks' files are written by the export."""
    if deployment.target not in TARGETS:
        raise ValueError(f"unknown target '{deployment.target}': choose one of {', '.join(TARGETS)}")
    for spec in all_specs.values():
        write_config(model_config(spec, deployment), root / spec.name)
        if spec.name in STEP_MODULES:
            install_step(root / spec.name, STEP_MODULES[spec.name])
        elif deployment.target == "cpu":
            install_step(root / spec.name, "onnx_network")
        else:
            shutil.rmtree(root / spec.name / VERSION / "steps", ignore_errors=True)
            (root / spec.name / VERSION / "model.py").unlink(missing_ok=True)
    write_config(ensemble_config(all_specs, deployment), root / contract.ENSEMBLE)
    (root / contract.ENSEMBLE / VERSION).mkdir(exist_ok=True)


def write_tokenizer_assets(directory: Path, bert_tokenizer, ctc_tokenizer, max_tokens: int) -> None:
    """The research tokenizers as files the serving step reads with `tokenizers` and json."""
    directory.mkdir(parents=True, exist_ok=True)
    backend = bert_tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_tokens)
    backend.save(str(directory / TOKENIZER_FILE))
    vocab = ctc_tokenizer.get_vocab()
    (directory / CTC_VOCAB_FILE).write_text(json.dumps({
        "vocab": sorted(vocab, key=vocab.get),
        "blank": ctc_tokenizer.pad_token,
        "delimiter": ctc_tokenizer.word_delimiter_token,
        "clean_up": bool(ctc_tokenizer.clean_up_tokenization_spaces),
    }, indent=1))
