"""The ONNX Runtime session every served network runs in, also used by the export's checks.

No Triton import here, so the export verifies each network with exactly the server's options.

Memory (measured on HuBERT-large fp32, a 1.2 GB file; bench/results has the served numbers):
- glibc's malloc raises its mmap threshold (up to 32 MiB) each time it frees a large mapped block,
  after which blocks of that size come from the heap, where freed memory stays in the process.
  ONNX Runtime frees each weight it has prepacked, so the originals (0.6 GB of HuBERT's 1.2 GB)
  stayed resident next to their packed copies. `give_back_freed_memory` fixes the threshold: the
  session then holds 1.28 GB instead of 1.88 GB, and prepacking (its speed) is kept.
- The arena keeps what the largest batch needed (8 x 15 s: +2.6 GB) unless it is shrunk after
  the run: `run_options(shrink=True)` frees the arena's unused regions when the run ends.
"""

import ctypes

import onnxruntime as ort

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


def make_session(path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """Full graph optimization, one thread per network (0: ONNX Runtime's default), no spinning."""
    give_back_freed_memory()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Two encoders share the cores: idle threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_options(shrink: bool) -> ort.RunOptions:
    """Options of one run; `shrink`: give the arena's memory that this run grew back when it ends."""
    options = ort.RunOptions()
    if shrink:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options
