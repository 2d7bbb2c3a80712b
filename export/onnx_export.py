"""Write each network as ONNX and prove it: ONNX Runtime against PyTorch, single and batched.

For every network the check runs several utterance lengths, each alone and all together as one
zero-padded batch, through PyTorch and through ONNX Runtime (in the session the server uses).
It fails past the tolerance and returns a report of max |ONNX - PyTorch| per output, argmax
agreement, and max |batched - alone| over each utterance's valid part.

One network in memory at a time: PyTorch's outputs are computed before the export, the module is
freed once its ONNX file is written, and only then is the file loaded, in one session.
"""

import gc
import inspect
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ser_triton.core import specs
from ser_triton.export.network_files import size as onnx_bytes
from ser_triton.export.errors import ExportError, ParityError
from ser_triton.export.examples import example_inputs
from ser_triton.serving.steps.batching import pad_and_stack, valid_lengths
from ser_triton.serving.steps.runtime import make_session

OPSET = 17
TOLERANCE = 1e-4


def signature(module: torch.nn.Module, spec: specs.ModelSpec) -> tuple[list[str], list[str]]:
    """The names of the module's inputs (its forward arguments) and outputs (its `outputs`), in its
    own order; an error unless they are the tensors that core.specs declares for it."""
    inputs, outputs = list(inspect.signature(module.forward).parameters), list(module.outputs)
    for kind, own, declared in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        if sorted(own) != sorted(t.name for t in declared):
            raise ExportError(f"{spec.name}: {type(module).__name__} has {kind} {own}, but core/specs.py declares "
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


def run_network(path: Path, spec, feeds: list[dict]) -> list[dict]:
    """The outputs of the network at `path` for each feed, from one session that is gone on return."""
    sess = session(path)
    return [run_onnx(sess, spec, feed) for feed in feeds]


def cases_and_batch(spec: specs.ModelSpec, cases: list[dict]) -> list[dict]:
    """Each case alone, then all of them as one padded batch: what every check runs."""
    return cases + [pad_batch(spec, cases)]


def alone_and_in_batch(spec: specs.ModelSpec, cases: list[dict], alone: list[dict], batched: dict):
    """Per case (in order) and output: (output, its value alone, its row of the padded batch), both
    cut to the case's valid part (from the case and its own values alone; an output without a
    variable axis whole). `batched` is anything indexed [output name][row]: the outputs of the
    padded batch, or another run's outputs alone, row by row."""
    for row, (case, values) in enumerate(zip(cases, alone)):
        for output in spec.outputs:
            value, in_batch = values[output.name][0], batched[output.name][row]
            extent = valid_extent(output, {**case, **values}, 0)
            if extent is not None:
                value, in_batch = value[:extent], in_batch[:extent]
            yield output, value, in_batch


def reference_outputs(module, spec: specs.ModelSpec, cases: list[dict]) -> list[dict]:
    """PyTorch's outputs for each case alone, then for the padded batch."""
    return [run_torch(module, spec, feed) for feed in cases_and_batch(spec, cases)]


def check_outputs(expected: list[dict], spec: specs.ModelSpec, path: Path, cases: list[dict],
                  tolerance: float = TOLERANCE) -> dict:
    """The ONNX file at `path` against PyTorch's outputs (reference_outputs) on the same cases."""
    report = {"outputs": {}, "tolerance": tolerance}
    *got, batched_onnx = run_network(path, spec, cases_and_batch(spec, cases))
    *alone_torch, batched_torch = expected
    batch_diffs = {output.name: [] for output in spec.outputs}
    for output, alone, in_batch in alone_and_in_batch(spec, cases, got, batched_onnx):
        batch_diffs[output.name].append(np.abs(alone - in_batch).max())
    for output in spec.outputs:
        diffs, agree = [], []
        for expected_row, got_row in zip(alone_torch, got):
            diffs.append(np.abs(expected_row[output.name] - got_row[output.name]).max())
            if output.dtype == "float32" and output.dims and output.dims[-1] != specs.VARIABLE:
                agree.append(float(np.mean(expected_row[output.name].argmax(-1) == got_row[output.name].argmax(-1))))
        diffs.append(np.abs(batched_torch[output.name] - batched_onnx[output.name]).max())
        report["outputs"][output.name] = {
            "max_abs_diff_onnx_vs_torch": float(max(diffs)),
            "max_abs_diff_batched_vs_alone": float(max(batch_diffs[output.name])),
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


def export_and_check(build: Callable[[], torch.nn.Module], spec: specs.ModelSpec, sizes: specs.Sizes, path: Path,
                     tolerance: float = TOLERANCE) -> dict:
    """build() makes the network's module: it lives only until its ONNX file is written, so the
    module and the session that checks the file are never in memory together."""
    cases = example_inputs(spec, sizes)
    started = time.perf_counter()
    module = build()
    expected = reference_outputs(module, spec, cases)
    reference_seconds = time.perf_counter() - started
    export_network(module, spec, cases[-1], path)
    exported = time.perf_counter() - started - reference_seconds
    del module
    gc.collect()
    report = check_outputs(expected, spec, path, cases, tolerance)
    report.update(export_seconds=round(exported, 2), check_seconds=round(time.perf_counter() - started - exported, 2),
                  onnx_bytes=onnx_bytes(path))
    return report
