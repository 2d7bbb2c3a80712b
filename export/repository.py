"""Write the Triton model repository: one model per network, the Python steps, the ensemble.

Every config.pbtxt is built as a `ModelConfig` protobuf from `core.specs`, the same
declarations the ONNX export used, for one of three targets:
- cpu:         ONNX networks run by ONNX Runtime inside Python-backend models (the tritonserver
               bundled in the nvidia-pytriton wheel has no onnxruntime backend); ragged batching.
- onnxruntime: native onnxruntime backend on GPU instances (Triton containers).
- tensorrt:    TensorRT plans built from the ONNX files (GPU only).
"""

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ser_triton.core import contract
from ser_triton.core import specs
from ser_triton.core.model_config import CONFIG_FILE
from ser_triton.serving.steps import parameters as keys
from ser_triton.serving.steps.text import CTC_VOCAB_FILE, TOKENIZER_FILE

TARGETS = ("cpu", "onnxruntime", "tensorrt")
STEPS_PACKAGE = Path(__file__).resolve().parent.parent / "serving" / "steps"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
VERSION = "1"

DTYPES = {"float32": mc.TYPE_FP32, "int64": mc.TYPE_INT64, "int32": mc.TYPE_INT32, "bytes": mc.TYPE_STRING}
STEP_MODULES = {
    specs.AUDIO_INPUT: "audio_input",
    specs.CTC_TOKENIZE: "ctc_tokenize",
    specs.EMOTION_LABEL: "emotion_label",
}
NETWORK_STEP_MODULE = "onnx_network"
"""The Python step that runs every network on the cpu target."""
STREAM_STEP_MODULE = "stream"
"""The Python step of the streaming model (contract.STREAM)."""
VAD_FILE = "silero_vad.onnx"
VAD_DISTRIBUTION, VAD_PACKAGE_FILE = "silero-vad", "silero_vad/data/silero_vad.onnx"
"""Silero VAD's weights (MIT), as the silero-vad package on PyPI ships them: the export copies the
file into the stream model's folder, so serving needs neither the package nor torch."""


@dataclass
class Deployment:
    """The knobs of a deployment; the defaults suit a small CPU server (2 cores)."""

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
    runtimes: dict = field(default_factory=dict)
    """cpu target: network -> {"runtime", "precision"} where it is not ONNX Runtime (the export's
    precision choice, e.g. OpenVINO in bf16)."""
    max_streams: int = 64
    """Live streams the streaming model serves at once; past it a new stream gets an error."""
    stream_idle_seconds: float = 10.0
    """A stream that sends no audio for this long is ended and its state freed."""
    stream_in_flight: int | None = None
    """Classifications the stream model has at the ensemble at once; the rest wait in its scheduler,
    finished utterances first (None: no limit, every one at once)."""
    stream_speculate_seconds: float | None = None
    """Once a pause inside an utterance has lasted this long, the utterance as it would end is classified
    ahead, on an idle ensemble only (None: never)."""
    segmentation: dict = field(default_factory=dict)
    """Segmentation rules that differ from the defaults (serving.steps.segmentation.SegmentationRules)."""
    max_batch_seconds: float = 16.0
    """cpu target: an audio network runs at most this much padded audio at once, so that its
    memory peak is that of one long utterance, not of 8 (8 x 15 s grew HuBERT's step by 2.6 GB,
    one 15 s utterance by 0.36 GB). A longer request runs alone and gives back the memory it grew."""

    def as_dict(self) -> dict:
        return asdict(self)


def model_directory(root: Path, name: str) -> Path:
    return root / name / VERSION


def network_file(root: Path, name: str) -> Path:
    return model_directory(root, name) / ONNX_FILE


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
    parameters = {
        keys.ONNX_FILE: ONNX_FILE,
        keys.INTRA_OP_THREADS: str(deployment.network_threads),
        keys.PADDING_SLACK: str(deployment.padding_slack),
        keys.VALID_LENGTHS: json.dumps({t.name: t.valid_length for t in spec.outputs if t.valid_length}),
        keys.RUNTIME: deployment.runtimes.get(spec.name, {}).get("runtime", "onnxruntime"),
        keys.RUNTIME_PRECISION: deployment.runtimes.get(spec.name, {}).get("precision", "f32"),
    }
    if specs.SAMPLES in spec.axes:  # the audio networks, whose memory grows with the audio they run
        parameters[keys.MAX_BATCH_SAMPLES] = str(round(deployment.max_batch_seconds * contract.SAMPLE_RATE))
        parameters[keys.MIN_SAMPLES] = str(contract.MIN_SAMPLES)
    return parameters


def step_parameters(spec: specs.ModelSpec, deployment: Deployment) -> dict[str, str]:
    roles = {keys.INPUT_ROLES: json.dumps({t.role: t.name for t in spec.inputs}),
             keys.OUTPUT_ROLES: json.dumps({t.role: t.name for t in spec.outputs})}
    if spec.name == specs.AUDIO_INPUT:
        return roles | {keys.SAMPLE_RATE: str(contract.SAMPLE_RATE), keys.MIN_SAMPLES: str(contract.MIN_SAMPLES),
                        keys.MAX_AUDIO_SECONDS: str(deployment.max_audio_seconds)}
    if spec.name == specs.CTC_TOKENIZE:
        return roles | {keys.TOKENIZER_FILE: TOKENIZER_FILE, keys.CTC_VOCAB_FILE: CTC_VOCAB_FILE,
                        keys.SAMPLE_RATE: str(contract.SAMPLE_RATE)}
    if spec.name == specs.EMOTION_LABEL:
        return roles | {keys.LABELS: json.dumps(list(contract.LABELS))}
    raise KeyError(spec.name)


def ensemble_config(all_specs: dict[str, specs.ModelSpec], deployment: Deployment) -> mc.ModelConfig:
    config = mc.ModelConfig(name=contract.ENSEMBLE, platform="ensemble",
                            max_batch_size=deployment.max_batch_size)
    renamed = {}  # (step, its tensor) -> ensemble tensor
    for outer, (step, role) in specs.ENSEMBLE_INPUTS.items():
        tensor = all_specs[step].input(role)
        tensor_config(config.input.add(), tensor, False, False)
        config.input[-1].name = renamed[(step, tensor.name)] = outer
    for outer, (step, role) in specs.ENSEMBLE_OUTPUTS.items():
        tensor = all_specs[step].output(role)
        tensor_config(config.output.add(), tensor, False, False)
        config.output[-1].name = renamed[(step, tensor.name)] = outer
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


def stream_config(deployment: Deployment) -> mc.ModelConfig:
    """The streaming model: decoupled, under the sequence batcher (one sequence per stream).

    The `oldest` strategy gives every live stream a slot (twice max_streams, so that a stream past
    the model's limit reaches the model and is told so, instead of waiting in the backlog); its
    batches are of chunks of different streams, up to one from every live stream, whose VAD windows
    the model scores together (one Silero run per 32 ms step for the whole batch)."""
    spec = specs.stream_spec()
    config = mc.ModelConfig(name=spec.name, backend="python", max_batch_size=deployment.max_streams)
    for tensor in spec.inputs:
        tensor_config(config.input.add(), tensor, native=False, ragged=True)
    config.input[-1].optional = True  # the chunks' rate: checked where given
    for tensor in spec.outputs:
        tensor_config(config.output.add(), tensor, native=False, ragged=False)
    config.model_transaction_policy.decoupled = True
    batcher = config.sequence_batching
    batcher.max_sequence_idle_microseconds = round(deployment.stream_idle_seconds * 1e6)
    batcher.oldest.max_candidate_sequences = 2 * deployment.max_streams
    batcher.oldest.max_queue_delay_microseconds = 0
    control = mc.ModelSequenceBatching.Control
    for name, kind in zip(specs.STREAM_CONTROLS, (control.CONTROL_SEQUENCE_START, control.CONTROL_SEQUENCE_END,
                                                   control.CONTROL_SEQUENCE_CORRID)):
        entry = batcher.control_input.add(name=name)
        if kind == control.CONTROL_SEQUENCE_CORRID:
            entry.control.add(kind=kind, data_type=mc.TYPE_UINT64)
        else:
            entry.control.add(kind=kind, int32_false_true=[0, 1])
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    ensemble = specs.ENSEMBLE_OUTPUTS
    parameters = {
        keys.INPUT_ROLES: json.dumps({t.role: t.name for t in spec.inputs}),
        keys.OUTPUT_ROLES: json.dumps({t.role: t.name for t in spec.outputs}),
        keys.SAMPLE_RATE: str(contract.SAMPLE_RATE), keys.MAX_AUDIO_SECONDS: str(deployment.max_audio_seconds),
        keys.VAD_FILE: VAD_FILE, keys.VAD_TENSORS: json.dumps(vad_tensors()),
        keys.SEGMENTATION_RULES: json.dumps(deployment.segmentation),
        keys.MAX_STREAMS: str(deployment.max_streams), keys.STREAM_IDLE_SECONDS: str(deployment.stream_idle_seconds),
        keys.MAX_CHUNK_SECONDS: str(contract.MAX_CHUNK_SECONDS),
        keys.STREAM_METRICS: json.dumps({"live": contract.LIVE_STREAMS_METRIC, "ended": contract.ENDED_STREAMS_METRIC,
                                         "dropped": contract.DROPPED_INTERIMS_METRIC,
                                         "speculations": contract.SPECULATIONS_METRIC}),
        keys.STREAM_IN_FLIGHT: str(deployment.stream_in_flight or 0),
        keys.STREAM_SPECULATE_SECONDS: str(deployment.stream_speculate_seconds or 0),
        keys.CLASSIFIER: json.dumps({"model": contract.ENSEMBLE, "audio": contract.AUDIO,
                                     **{role: name for name, (_, role) in ensemble.items()}}),
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def vad_tensors() -> dict[str, str]:
    """Silero VAD's tensors by role (core.specs.vad_spec), as the stream model looks them up."""
    spec = specs.vad_spec()
    return {"audio": spec.input("audio").name, "state": spec.input("state").name, "rate": spec.input("rate").name,
            "probability": spec.output("probability").name, "next_state": spec.output("state").name}


def vad_package_file() -> Path:
    """Silero VAD's ONNX file in the installed silero-vad package (found through the
    distribution's file list: importing the package would import torch)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(VAD_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{VAD_DISTRIBUTION} is not installed: the export extra brings it "
                                "(pip install '.[export]', or make setup)") from None
    path = Path(distribution.locate_file(VAD_PACKAGE_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{VAD_DISTRIBUTION} {distribution.version} has no {VAD_PACKAGE_FILE}")
    return path


def write_stream_model(root: Path, deployment: Deployment) -> None:
    directory = root / contract.STREAM
    write_config(stream_config(deployment), directory)
    install_step(directory, STREAM_STEP_MODULE)
    shutil.copyfile(vad_package_file(), model_directory(root, contract.STREAM) / VAD_FILE)


def write_config(config: mc.ModelConfig, directory: Path) -> None:
    """`directory`/config.pbtxt (core.model_config reads it back)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(text_format.MessageToString(config))


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
            install_step(root / spec.name, NETWORK_STEP_MODULE)
        else:
            shutil.rmtree(model_directory(root, spec.name) / "steps", ignore_errors=True)
            (model_directory(root, spec.name) / "model.py").unlink(missing_ok=True)
    write_config(ensemble_config(all_specs, deployment), root / contract.ENSEMBLE)
    model_directory(root, contract.ENSEMBLE).mkdir(exist_ok=True)
    write_stream_model(root, deployment)
