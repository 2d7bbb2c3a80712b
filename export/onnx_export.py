"""Write each network as ONNX and prove it: ONNX Runtime against PyTorch, single and batched.

For every network the check runs several utterance lengths, each alone and all together as one
zero-padded batch, through PyTorch and through ONNX Runtime (in the session the server uses).
It fails past the tolerance and returns a report of max |ONNX - PyTorch| per output, argmax
agreement, and max |batched - alone| over each utterance's valid part.
"""

import inspect
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from export import specs
from export.errors import ExportError, ParityError
from export.examples import example_inputs
from serving.steps.batching import pad_and_stack, valid_lengths
from serving.steps.runtime import make_session

OPSET = 17
TOLERANCE = 1e-4


def signature(module: torch.nn.Module, spec: specs.ModelSpec) -> tuple[list[str], list[str]]:
    """The names of the module's inputs (its forward arguments) and outputs (its `outputs`), in its
    own order; an error unless they are the tensors that export.specs declares for it."""
    inputs, outputs = list(inspect.signature(module.forward).parameters), list(module.outputs)
    for kind, own, declared in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        if sorted(own) != sorted(t.name for t in declared):
            raise ExportError(f"{spec.name}: {type(module).__name__} has {kind} {own}, but export.specs declares "
                              f"{[t.name for t in declared]}: make them the same names")
    return inputs, outputs


def export_network(module: torch.nn.Module, spec: specs.ModelSpec, example: dict, path: Path) -> None:
    inputs, outputs = signature(module, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes; parity below is the real check
        torch.onnx.export(
            module, tuple(torch.from_numpy(example[name]) for name in inputs), str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={t.name: t.axes for t in spec.inputs + spec.outputs},
            opset_version=OPSET, dynamo=False,
        )


def session(path: Path):
    """The server's session options, with every core (the export runs alone)."""
    return make_session(path, intra_op_threads=0)


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
        outputs = module(**{t.name: torch.from_numpy(inputs[t.name]) for t in spec.inputs})
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {name: o.numpy() for name, o in zip(module.outputs, outputs)}


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
        raise ParityError(f"{spec.name}: ONNX Runtime and PyTorch differ past {tolerance}: {worst}")
    return report


def export_and_check(module, spec: specs.ModelSpec, sizes: specs.Sizes, path: Path,
                     tolerance: float = TOLERANCE) -> dict:
    cases = example_inputs(spec, sizes)
    started = time.perf_counter()
    export_network(module, spec, cases[-1], path)
    exported = time.perf_counter() - started
    report = check_network(module, spec, path, cases, tolerance)
    report.update(export_seconds=round(exported, 2), check_seconds=round(time.perf_counter() - started - exported, 2),
                  onnx_bytes=onnx_bytes(path))
    return report


def onnx_bytes(path: Path) -> int:
    """Size of an ONNX file with its external data files."""
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob("*.data"))
