"""Reduced precision for ONNX Runtime on CPU: dynamic int8 quantization of the MatMuls.

Weights become int8 per output channel, activations are quantized per call (uint8). Products of
two activations (attention scores) stay fp32. The drift this costs is measured by export.drift,
never assumed.
"""

import logging
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto

from export import network_files
from export.graph_rewrites import unshare_weights

PRECISIONS = ("fp32", "int8")


def quantize_int8(source: Path, destination: Path) -> None:
    """Dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic) of every MatMul with a
    constant weight. reduce_range is off: exact on CPUs with VNNI or AMX int8 dot products."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    network_files.remove(destination)
    with tempfile.TemporaryDirectory(prefix="unshared-", dir=destination.parent) as scratch:
        model = onnx.load(str(source))
        if unshare_weights(model):
            source = Path(scratch) / source.name
            network_files.save(model, source)
        del model  # the quantizer loads its own copy, from a file (given a model, it makes two)
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # the quantizer logs a line per tensor, and advice
        try:
            quantize_dynamic(source, destination, op_types_to_quantize=["MatMul"],
                             per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                             use_external_data_format=True,
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
        finally:
            root.setLevel(level)
    network_files.share_weights_like_network(destination)
