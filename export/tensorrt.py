"""TensorRT plans for the `tensorrt` target (GPU only): one engine per ONNX network.

Each engine gets one optimization profile spanning batch 1..max_batch_size and every variable
axis from its shortest to its longest allowed extent, by what the axis counts (core.specs):
samples up to the deployment's longest audio, frames as many as those samples make, tokens up to
BERT's 512. So any request the ensemble accepts has an engine shape. Plans are tied to the GPU
and TensorRT version that built them: build them on the serving GPU, in the Triton container
whose server runs them.
"""

import logging
from pathlib import Path

from ser_triton.core.contract import MIN_SAMPLES, SAMPLE_RATE
from ser_triton.core import specs
from ser_triton.export.errors import ExportError, TensorRTUnavailable
from ser_triton.export.repository import ONNX_FILE, PLAN_FILE, Deployment, model_directory
from ser_triton.model.sources import BERT_MAX_TOKENS

log = logging.getLogger(__name__)
SAMPLES_PER_FRAME = 320  # the wav2vec2/HuBERT convolutional front end's total stride
TYPICAL_SECONDS = 5.0


def axis_ranges(deployment: Deployment) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) extent of each kind of variable axis."""
    max_samples = int(deployment.max_audio_seconds * SAMPLE_RATE)
    samples = (MIN_SAMPLES, int(TYPICAL_SECONDS * SAMPLE_RATE), max_samples)
    frames = (1, samples[1] // SAMPLES_PER_FRAME, max_samples // SAMPLES_PER_FRAME)
    return {specs.SAMPLES: samples, specs.FRAMES: frames, specs.TOKENS: (1, 16, BERT_MAX_TOKENS)}


def profile_shapes(tensor: specs.TensorSpec, deployment: Deployment) -> tuple[list, list, list]:
    batch = (1, max(1, deployment.max_batch_size // 2), deployment.max_batch_size)
    ranges = axis_ranges(deployment)
    shapes = []
    for which in range(3):
        shape = [batch[which]]
        for dim in tensor.dims:
            shape.append(ranges[tensor.axis][which] if dim == specs.VARIABLE else dim)
        shapes.append(shape)
    return tuple(shapes)


def build_plan(onnx_path: Path, plan_path: Path, spec: specs.ModelSpec, deployment: Deployment,
               fp16: bool = False) -> None:
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed here: build the plans on the GPU machine, inside the Triton "
            "container that will serve them (`python -m ser_triton.export --target tensorrt`)") from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for tensor in spec.inputs:
        profile.set_shape(tensor.name, *profile_shapes(tensor, deployment))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine for {onnx_path}")
    plan_path.write_bytes(bytes(engine))


def build_plans(out: Path, all_specs: dict[str, specs.ModelSpec], deployment: Deployment, fp16: bool = False) -> None:
    for name in specs.ONNX_NETWORKS:
        directory = model_directory(out, name)
        log.info("building the TensorRT plan of %s", name)
        build_plan(directory / ONNX_FILE, directory / PLAN_FILE, all_specs[name], deployment, fp16)
