"""The Python-backend steps (serving/steps) run in this process, without Triton: a stand-in for the
part of `triton_python_backend_utils` that serving/steps/backend.py uses, and a step initialized
from an exported model directory exactly as Triton initializes it (its config.pbtxt as JSON, its
directory and version), so `execute` runs the steps' own code on requests made here."""

import contextlib
import importlib
import json
import sys
import types
from pathlib import Path

import numpy as np
from google.protobuf import json_format

from ser_triton.export import repository
from ser_triton.core.model_config import read_config

STEP_MODULES = ("backend", "onnx_network", "audio_input", "ctc_tokenize", "emotion_label")
"""The steps' modules that import triton_python_backend_utils (through .backend)."""


class Tensor:
    def __init__(self, name: str, value: np.ndarray):
        self._name, self._value = name, value

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._value


class TritonError:
    INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

    def __init__(self, message: str, code: str = INTERNAL):
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self._tensors, self._error = list(output_tensors), error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error

    def outputs(self) -> dict[str, np.ndarray]:
        return {tensor.name(): tensor.as_numpy() for tensor in self._tensors}


def get_input_tensor_by_name(request: dict, name: str):
    """A request here is {input name: array}, as the step reads it from Triton's request."""
    return Tensor(name, request[name]) if name in request else None


def backend_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = Tensor, TritonError, InferenceResponse
    module.get_input_tensor_by_name = get_input_tensor_by_name
    return module


@contextlib.contextmanager
def steps_without_triton():
    """ser_triton.serving.steps with its Triton-facing modules imported afresh against the stand-in;
    afterwards the stand-in and those modules are forgotten (sys.modules and the package as before)."""
    package = importlib.import_module("ser_triton.serving.steps")
    names = [f"{package.__name__}.{name}" for name in STEP_MODULES]
    saved_modules = {name: sys.modules.pop(name) for name in [*names, "triton_python_backend_utils"]
                     if name in sys.modules}
    saved_attributes = {name: package.__dict__[name] for name in STEP_MODULES if name in package.__dict__}
    sys.modules["triton_python_backend_utils"] = backend_utils()
    try:
        for name in names:
            importlib.import_module(name)
        yield package
    finally:
        for name in [*names, "triton_python_backend_utils"]:
            sys.modules.pop(name, None)
        sys.modules.update(saved_modules)
        for name in STEP_MODULES:
            package.__dict__.pop(name, None)
        vars(package).update(saved_attributes)


def triton_args(model_directory: Path) -> dict:
    """What Triton passes to `initialize`: the model config as JSON (proto field names), the model's
    directory and its version."""
    config = read_config(model_directory / "config.pbtxt")
    return {"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(model_directory), "model_version": repository.VERSION}


def load_step(module: types.ModuleType, model_directory: Path):
    step = module.TritonPythonModel()
    step.initialize(triton_args(model_directory))
    return step
