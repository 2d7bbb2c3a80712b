"""Make one exported network fast on a CPU, in place, and prove it changed nothing.

For the `cpu` target, after a network has passed its parity check against PyTorch, the conv
front ends of HuBERT and wav2vec2 are rewritten into MatMuls (export.graph_rewrites) and checked
against the exported graph within the export's fp32 tolerance. Reduced precision comes after,
once every network is exported (export.precision), because it is judged along the whole chain.
Every network keeps its weights in a file of its own (export.network_files: cheaper to write here
and to load in the server), and each comparison holds one session at a time.
"""

import logging
from pathlib import Path

import onnx

from ser_triton.export import network_files

from ser_triton.core import specs
from ser_triton.export.drift import network_drift
from ser_triton.export.errors import ParityError
from ser_triton.export.graph_rewrites import conv_to_matmul, time_sums_to_matmul
from ser_triton.core.glossary import ACOUSTIC_ENCODER, ASR

log = logging.getLogger(__name__)

CONV_NETWORKS = (ACOUSTIC_ENCODER.name, ASR.name)
"""Networks whose convolutional feature encoder becomes MatMuls."""


def rewrite(source: Path, destination: Path) -> dict:
    """The conv front end as MatMuls; how many places each rewrite changed."""
    model = onnx.load(str(source))
    counts = {"time_sums_to_matmul": time_sums_to_matmul(model),  # shape inference: before the rewrite
              "conv_to_matmul": conv_to_matmul(model)}
    network_files.save(model, destination)
    return counts


def optimize_network(path: Path, spec: specs.ModelSpec, cases: list[dict], scratch: Path,
                     tolerance: float = 1e-4) -> dict:
    """Rewrite the network at `path` in place (if it has a conv front end); its report entry.
    `scratch`: a folder of this network's own."""
    entry = {}
    if spec.name in CONV_NETWORKS:  # the rewrite writes the weights beside the network
        exported = scratch / "exported" / path.name
        network_files.move(path, exported)
        entry.update(rewrite(exported, path))
        entry["fp32_vs_exported"] = network_drift(exported, path, spec, cases)
        network_files.remove(exported)
        worst = {o: v["max_abs_diff"] for o, v in entry["fp32_vs_exported"].items() if v["max_abs_diff"] > tolerance}
        if worst:
            raise ParityError(f"{spec.name}: the rewritten graph differs from the exported one past {tolerance}: "
                              f"{worst}; export with --no-optimize and report this")
    elif not network_files.data_file(path).exists():  # one file, as exported: the weights go beside it
        network_files.save(onnx.load(str(path)), path)
    entry["onnx_bytes"] = network_files.size(path)
    log.info("%s optimized: %s", spec.name, {k: v for k, v in entry.items() if k != "onnx_bytes"})
    return entry
