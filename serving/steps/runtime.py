"""The inference session every served network runs in, also used by the export's checks.

Two runtimes behind one small interface (`run(output_names, feed)`, `get_inputs()`,
`get_outputs()`, as ONNX Runtime's InferenceSession has it):
- onnxruntime: fp32 and int8 (dynamic or static) ONNX files;
- openvino: the same ONNX files with an inference precision (bf16 on CPUs with AMX or
  AVX512-BF16, where it runs in hardware), for the precision the export chose.
No Triton import here, so the export verifies each network with exactly the server's options.

Memory (measured on HuBERT-large fp32, a 1.2 GB file; bench/results has the served numbers):
- glibc's malloc raises its mmap threshold (up to 32 MiB) each time it frees a large mapped block,
  after which blocks of that size come from the heap, where freed memory stays in the process.
  ONNX Runtime frees each weight it has prepacked, so the originals (0.6 GB of HuBERT's 1.2 GB)
  stayed resident next to their packed copies. `give_back_freed_memory` fixes the threshold: the
  session then holds 1.28 GB instead of 1.88 GB, and prepacking (its speed) is kept.
- Memory patterns are off. With them, ONNX Runtime plans each new input shape's activations as
  one block, which the arena cannot fit into what earlier runs left free: requests of varying
  length kept growing it (two 15 s runs: +0.36 GB, then +0.3 GB more). Without them the arena
  holds what the largest run needed and reuses it; same speed within the noise here.
- What the largest run needs is bounded by the step (serving.steps.onnx_network: most padded
  samples per run); `run_options(shrink=True)` frees the arena's unused regions after a run,
  for the rare run above that bound (shrinking after every run cost 7-17% of a 4.5 s run's time).
"""

import ctypes
from dataclasses import dataclass

import onnxruntime as ort

RUNTIMES = ("onnxruntime", "openvino")

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (glibc malloc.h)."""
LARGE_BLOCK = 1 << 20
"""Blocks from this size up get their own mapping, which free() returns to the system."""


def give_back_freed_memory() -> None:
    """Make glibc return freed large blocks to the system (in this process, from now on)."""
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    except (OSError, AttributeError):  # not glibc: its allocator has no such threshold to fix
        pass


def make_session(path, intra_op_threads: int = 1, runtime: str = "onnxruntime", precision: str = "f32"):
    """One network's session: full graph optimization, `intra_op_threads` threads (0: the
    runtime's default), idle threads sleeping instead of spinning."""
    give_back_freed_memory()
    if runtime == "openvino":
        return OpenVINOSession(path, intra_op_threads, precision)
    if runtime != "onnxruntime":
        raise ValueError(f"unknown runtime '{runtime}': choose one of {', '.join(RUNTIMES)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = False
    # Two encoders share the cores: idle threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_options(shrink: bool) -> ort.RunOptions:
    """Options of one run; `shrink`: give the arena's memory that this run grew back when it ends."""
    options = ort.RunOptions()
    if shrink:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


@dataclass
class TensorInfo:
    name: str
    shape: list


class OpenVINOSession:
    """An ONNX file compiled by OpenVINO for the CPU, with ONNX Runtime's calling convention."""

    def __init__(self, path, threads: int, precision: str):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.model = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.model.create_infer_request()
        # A port can carry several tensor names (the ONNX output's among them): index by each.
        self.output_ports = {name: port for port in self.model.outputs for name in port.get_names()}

    def get_inputs(self) -> list[TensorInfo]:
        return [TensorInfo(port.any_name, list(port.partial_shape)) for port in self.model.inputs]

    def get_outputs(self) -> list[TensorInfo]:
        return [TensorInfo(name, list(port.partial_shape)) for name, port in self.output_ports.items()]

    def run(self, output_names, feed: dict, run_options=None) -> list:
        """run_options: ONNX Runtime's, accepted and not needed (OpenVINO manages its memory)."""
        results = self.request.infer(feed, share_inputs=False)
        ports = [self.output_ports[name] for name in output_names] if output_names else self.model.outputs
        return [results[port].copy() for port in ports]
