"""int8 for ONNX Runtime on CPU: dynamic or static (calibrated) quantization of the MatMuls.

- dynamic: weights int8 per output channel; activations quantized at run time, per call, with a
  scale taken from the whole batch (so an utterance's answer can depend on its batch-mates).
- static: weights int8 per output channel; activation scales calibrated once on real inputs of
  the network (QDQ format), so answers do not depend on the batch. Chosen parts can stay fp32
  (`KEEP_FP32`: the conv front end, the CTC head), from measured drift (export.precision).
Only MatMuls with a constant weight are quantized: products of two activations (attention scores)
stay fp32. reduce_range (7-bit activations) is on where the CPU lacks VNNI/AMX: AVX2's u8*s8
dot products saturate otherwise.
"""

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from ser_triton.export import network_files
from ser_triton.export.graph_rewrites import unshare_weights

KEEP_FP32 = {
    "front_end": lambda name: "as_matmul" in name and "/ReduceSum" not in name or "feature_projection" in name,
    "ctc_head": lambda name: "lm_head" in name,
}
"""Groups of MatMuls (by node name) that a static int8 variant may keep in fp32."""


@contextmanager
def _quiet():
    """The quantizer logs a line per tensor, and advice."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _prepared(source: Path, scratch: Path, keep_fp32) -> tuple[Path, list[str]]:
    """The file to hand the quantizer (the network with shared weights unshared, written apart
    only if that changed it) and the MatMuls to leave in fp32. The quantizer loads its own copy
    from a file: given a model, it makes two."""
    model = onnx.load(str(source))
    excluded = matmuls_in(model, keep_fp32)
    if unshare_weights(model):
        source = Path(scratch) / source.name
        network_files.save(model, source)
    return source, excluded


def quantize_dynamic_int8(source: Path, destination: Path, keep_fp32=(), reduce_range: bool = False) -> None:
    """Dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic), weights written
    next to the network (export.network_files)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    network_files.remove(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unshared-", dir=destination.parent) as scratch, _quiet():
        prepared, excluded = _prepared(source, Path(scratch), keep_fp32)
        quantize_dynamic(prepared, destination, op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded,
                         per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    network_files.share_weights_like_network(destination)


def matmuls_in(model: onnx.ModelProto, groups) -> list[str]:
    """Names of the MatMul nodes that belong to any of the KEEP_FP32 groups."""
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and any(KEEP_FP32[group](node.name) for group in groups)]


def calibrate(model_path: Path, calibration: list[dict], cache: Path) -> None:
    """MinMax activation ranges of the MatMuls over `calibration`, saved to `cache` in the form
    onnxruntime.quantization reads (the tensors and reductions its MinMax calibrator uses).

    The graph is augmented without loading the weights: a ReduceMin and a ReduceMax per input
    and output of each MatMul become outputs, and the augmented graph, written beside the
    network, reads the same weights file. ORT's own calibrator loads the network, writes an
    augmented copy and runs it with the copy still held, three times the weights in memory
    (3.9 GB for HuBERT-large's 1.2 GB); this holds one session, and one utterance at a time."""
    import onnxruntime as ort
    from onnx import helper, shape_inference
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    graph_only = shape_inference.infer_shapes(onnx.load(str(model_path), load_external_data=False))
    graph = graph_only.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    weights = {tensor.name for tensor in graph.initializer}
    tensors = sorted({name for node in graph.node if node.op_type == "MatMul" for name in [*node.input, *node.output]
                      if name not in weights and types.get(name) == TensorProto.FLOAT})
    for tensor in tensors:
        for reduce in ("ReduceMin", "ReduceMax"):
            graph.node.append(helper.make_node(reduce, [tensor], [f"{tensor}_{reduce}"], keepdims=0))
            graph.output.append(helper.make_tensor_value_info(f"{tensor}_{reduce}", TensorProto.FLOAT, []))
    augmented = Path(model_path).with_name(f"calibration-{Path(model_path).name}")
    onnx.save(graph_only, str(augmented))
    del graph_only, graph
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors as in the graph
        options.enable_mem_pattern = False  # each utterance's length differs
        session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
        names = [f"{tensor}_{reduce}" for tensor in tensors for reduce in ("ReduceMin", "ReduceMax")]
        lowest = dict.fromkeys(tensors, np.inf)
        highest = dict.fromkeys(tensors, -np.inf)
        for feed in calibration:
            values = dict(zip(names, session.run(names, feed)))
            for tensor in tensors:
                lowest[tensor] = min(lowest[tensor], float(values[f"{tensor}_ReduceMin"]))
                highest[tensor] = max(highest[tensor], float(values[f"{tensor}_ReduceMax"]))
        del session
    finally:
        augmented.unlink(missing_ok=True)
    ranges = {tensor: (np.array([lowest[tensor]], np.float32), np.array([highest[tensor]], np.float32))
              for tensor in tensors}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)


def quantize_static_int8(source: Path, destination: Path, calibration: list[dict], keep_fp32=(),
                         reduce_range: bool = False, cache: Path | None = None) -> None:
    """Static int8 quantization (QDQ, per-channel weights, MinMax activation ranges) calibrated on
    `calibration`: feeds of the network, one utterance each. `cache`: where the ranges are kept,
    so that variants of one network (other parts kept fp32) calibrate once."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    network_files.remove(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unshared-", dir=destination.parent) as scratch, _quiet():
        prepared, excluded = _prepared(source, Path(scratch), keep_fp32)
        cache = Path(cache or Path(scratch) / "ranges.json")
        if not cache.is_file():
            calibrate(prepared, calibration, cache)
        quantize_static(prepared, destination, None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                        use_external_data_format=True, extra_options={"MatMulConstBOnly": True},
                        calibration_cache_path=cache)
    network_files.share_weights_like_network(destination)
