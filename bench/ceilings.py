"""What each precision can give on this CPU: the GEMM rate of the runtime that serves it, and
how close a served variant comes to the ceiling its networks' precisions set.

One GEMM, [225 x 1024] @ [1024 x 4096] (an encoder's feed-forward layer on 4.5 s of audio),
2 threads, best of a few seconds of runs, for each way a network is served: ONNX Runtime fp32,
dynamic int8 and static (QDQ) int8, and OpenVINO fp32 and bf16 (bf16 only on a CPU with AMX or
AVX512-BF16). A variant's ceiling is the audio-seconds per second it would reach if every network
ran all its work at its own precision's rate: 1 / sum(GFLOP per audio-second / rate).
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ser_triton.core import specs

M, K, N = 225, 1024, 4096

GFLOP_PER_AUDIO_SECOND = {
    specs.ACOUSTIC_ENCODER: 36.0,
    specs.ASR: 36.0,
    specs.TEXT_ENCODER: 3.0,
    specs.FUSION_HEAD: 0.1,
}
"""Work per second of audio, counted from the networks' shapes: each 24-layer 1024-wide encoder
(50 frames a second) ~36 GFLOP: the conv front end ~5, the transformer ~30 (per frame and layer:
the projections and feed-forward, 12 x 1024^2 multiply-adds of 2 FLOP each, plus attention over the
utterance); BERT-base ~0.17 GFLOP per token at ~15 tokens per utterance (random-weight transcripts
make more, so this is a lower bound); the head is small."""


def _gemm_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", N])],
        [numpy_helper.from_array(np.random.default_rng(0).standard_normal((K, N)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    import onnx

    onnx.save(model, str(path))
    return path


def serving_key(variant: dict) -> str:
    """How a network is served, as a key of gemm_rates: fp32, int8, int8-static, fp32-openvino, bf16."""
    if variant["runtime"] == "openvino":
        return "bf16" if variant["precision"] == "bf16" else "fp32-openvino"
    if variant["precision"] == "int8":
        return "int8" if variant["quantization"] == "dynamic" else "int8-static"
    return "fp32"


def gemm_rates(keys: set[str], threads: int = 2, seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s of the GEMM for each serving key asked for (2 * M * K * N per run)."""
    from ser_triton.export.quantize import quantize_dynamic_int8, quantize_static_int8
    from ser_triton.serving.steps.runtime import make_session

    rng = np.random.default_rng(1)
    x = rng.standard_normal((M, K)).astype(np.float32)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="gemm-") as scratch:
        fp32 = _gemm_model(Path(scratch) / "fp32.onnx")
        files = {"fp32": fp32, "fp32-openvino": fp32, "bf16": fp32}
        if "int8" in keys:
            files["int8"] = Path(scratch) / "int8.onnx"
            quantize_dynamic_int8(fp32, files["int8"])
        if "int8-static" in keys:
            files["int8-static"] = Path(scratch) / "int8-static.onnx"
            quantize_static_int8(fp32, files["int8-static"], [{"x": x}])
        for key in sorted(keys):
            runtime = "openvino" if key in ("bf16", "fp32-openvino") else "onnxruntime"
            session = make_session(files[key], threads, runtime, "bf16" if key == "bf16" else "f32")
            session.run(None, {"x": x})
            best, deadline = float("inf"), time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                session.run(None, {"x": x})
                best = min(best, time.perf_counter() - started)
            rates[key] = round(2 * M * K * N / best / 1e9, 1)
    return rates


def ceiling(serving: dict[str, str], rates: dict[str, float]) -> float:
    """Audio-seconds per second if each network (name -> serving key) ran at its precision's rate."""
    return 1.0 / sum(GFLOP_PER_AUDIO_SECOND[name] / rates[key] for name, key in serving.items())
