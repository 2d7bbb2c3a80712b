"""The little that every Python-backend step needs from Triton: config, tensors by role, responses."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from .parameters import INPUT_ROLES, OUTPUT_ROLES


class Step:
    """Reads the model config; subclasses implement `execute`."""

    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.parameters = {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}
        self.directory = Path(args["model_repository"]) / args["model_version"]
        self.input_names = [t["name"] for t in self.config["input"]]
        self.output_names = [t["name"] for t in self.config["output"]]
        self.inputs = json.loads(self.parameters.get(INPUT_ROLES, "{}"))
        self.outputs = json.loads(self.parameters.get(OUTPUT_ROLES, "{}"))
        self.setup()

    def setup(self):
        pass

    def file(self, parameter: str) -> Path:
        """The file a config parameter names, next to model.py; a clear error if it is missing."""
        path = self.directory / self.parameters[parameter]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: re-run `make export` to write it")
        return path

    def read(self, request) -> dict[str, np.ndarray]:
        """The request's inputs by role."""
        return {role: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for role, name in self.inputs.items()}

    def respond(self, outputs: dict[str, np.ndarray]):
        """A response from outputs given by role."""
        return respond({self.outputs[role]: value for role, value in outputs.items()})


def read_inputs(request, names) -> dict[str, np.ndarray]:
    return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in names}


def respond(outputs: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]
    )


def fail(message: str, bad_input: bool = False):
    """An error response for one request; `bad_input` marks it the caller's fault (INVALID_ARG)."""
    code = pb_utils.TritonError.INVALID_ARG if bad_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def strings(values: list[str]) -> np.ndarray:
    """A [n, 1] TYPE_STRING tensor."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)
