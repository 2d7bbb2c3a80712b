"""The ONNX Runtime session every served network runs in, also used by the export's checks.

No Triton import here, so the export verifies each network with exactly the server's options.
"""

import onnxruntime as ort


def make_session(path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """Full graph optimization, one thread per network (0: ONNX Runtime's default), no spinning."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    # Two encoders share the cores: idle threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
