"""Write each network as ONNX and prove it: ONNX Runtime against PyTorch, single and batched.

For every network the check runs several utterance lengths, each alone and all together as one
zero-padded batch, through PyTorch and through ONNX Runtime (with the graph optimisations the
server uses). It fails past the tolerance and returns a report of max |ONNX - PyTorch| per
output, argmax agreement, and max |batched - alone| over each utterance's valid part.
"""

import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from client.contract import SAMPLE_RATE
from export import specs
from serving.steps.batching import pad_and_stack, valid_lengths

OPSET = 17
TOLERANCE = 1e-4


class ParityError(AssertionError):
    """ONNX Runtime and PyTorch disagree past the tolerance."""


def export_network(module: torch.nn.Module, spec: specs.ModelSpec, example: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes; parity below is the real check
        torch.onnx.export(
            module, tuple(torch.from_numpy(example[t.name]) for t in spec.inputs), str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes={t.name: t.axes for t in spec.inputs + spec.outputs},
            opset_version=OPSET, dynamo=False,
        )


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- parity inputs, per network


def parity_cases(name: str, sizes: specs.Sizes, seed: int = 0) -> list[dict]:
    """Named inputs for several utterances of different lengths, each as a batch of one."""
    rng = np.random.default_rng(seed)
    if name in (specs.ACOUSTIC_ENCODER, specs.ASR):
        lengths = [int(SAMPLE_RATE * s) for s in (0.6, 1.3, 2.05)]
        return [{"waveform": (0.1 * rng.standard_normal((1, n))).astype(np.float32),
                 "waveform_length": np.array([n], dtype=np.int64)} for n in lengths]
    if name == specs.TEXT_ENCODER:
        return [{"input_ids": np.concatenate([[101], rng.integers(1000, 30000, n - 2), [102]])[None],
                 "attention_mask": np.ones((1, n), dtype=np.int64)} for n in (2, 9, 17)]
    if name == specs.FUSION_HEAD:
        return [{
            "acoustic_features": rng.standard_normal((1, frames, sizes.acoustic_dim)).astype(np.float32),
            "acoustic_frames": np.array([frames], dtype=np.int64),
            "text_features": rng.standard_normal((1, tokens, sizes.text_dim)).astype(np.float32),
            "attention_mask": np.ones((1, tokens), dtype=np.int64),
        } for frames, tokens in ((30, 2), (64, 9), (101, 17))]
    raise KeyError(name)


def pad_batch(spec: specs.ModelSpec, cases: list[dict]) -> dict:
    """Zero-pad the cases' inputs along their variable axes and stack them into one batch."""
    return {t.name: pad_and_stack([case[t.name] for case in cases]) for t in spec.inputs}


def valid_extent(output: specs.TensorSpec, values: dict, row: int) -> int | None:
    """How much of an output's variable axis is valid for one batch row (None: no such axis)."""
    if output.valid_length is None:
        return None
    return int(valid_lengths(values[output.valid_length])[row])


# ---------------------------------------------------------------- the check


def run_torch(module, spec, inputs: dict) -> dict:
    with torch.no_grad():
        outputs = module(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {t.name: o.numpy() for t, o in zip(spec.outputs, outputs)}


def run_onnx(sess, spec, inputs: dict) -> dict:
    outputs = sess.run([t.name for t in spec.outputs], {t.name: inputs[t.name] for t in spec.inputs})
    return dict(zip((t.name for t in spec.outputs), outputs))


def check_network(module, spec: specs.ModelSpec, path: Path, cases: list[dict],
                  tolerance: float = TOLERANCE) -> dict:
    sess = session(path)
    report = {"outputs": {}, "tolerance": tolerance}
    batch = pad_batch(spec, cases)
    runs = [(case, run_torch(module, spec, case), run_onnx(sess, spec, case)) for case in cases]
    batched_torch, batched_onnx = run_torch(module, spec, batch), run_onnx(sess, spec, batch)
    for output in spec.outputs:
        diffs, batch_diffs, agree = [], [], []
        for row, (case, expected, got) in enumerate(runs):
            diffs.append(np.abs(expected[output.name] - got[output.name]).max())
            alone = got[output.name][0]
            in_batch = batched_onnx[output.name][row]
            extent = valid_extent(output, {**batch, **batched_onnx}, row)
            if extent is not None:
                in_batch = in_batch[:extent]
                alone = alone[:extent]
            batch_diffs.append(np.abs(alone - in_batch).max())
            if output.dtype == "float32" and output.dims and output.dims[-1] != specs.VARIABLE:
                agree.append(float(np.mean(expected[output.name].argmax(-1) == got[output.name].argmax(-1))))
        diffs.append(np.abs(batched_torch[output.name] - batched_onnx[output.name]).max())
        report["outputs"][output.name] = {
            "max_abs_diff_onnx_vs_torch": float(max(diffs)),
            "max_abs_diff_batched_vs_alone": float(max(batch_diffs)),
            **({"argmax_agreement": min(agree)} if agree else {}),
        }
    worst = {
        f"{name}.{key}": value
        for name, entry in report["outputs"].items()
        for key, value in entry.items() if key.startswith("max_abs") and value > tolerance
    }
    report["passed"] = not worst
    if worst:
        raise ParityError(f"{spec.name}: differences past {tolerance}: {worst}")
    return report


def export_and_check(name: str, module, spec, sizes, path: Path, tolerance: float = TOLERANCE) -> dict:
    cases = parity_cases(name, sizes)
    started = time.perf_counter()
    export_network(module, spec, cases[-1], path)
    exported = time.perf_counter() - started
    report = check_network(module, spec, path, cases, tolerance)
    report.update(export_seconds=round(exported, 2), check_seconds=round(time.perf_counter() - started - exported, 2),
                  onnx_bytes=path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("*.data")))
    return report
