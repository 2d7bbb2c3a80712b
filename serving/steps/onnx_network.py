"""Runs one exported ONNX network with ONNX Runtime inside the Python backend (CPU target).

Requests of different lengths arrive together (ragged dynamic batching). Those of similar
length are zero-padded into one batch (padding may add at most `padding_slack` of extra work),
run once, and each request gets back exactly its own rows, cut to its valid length. If a batch
fails as a whole, each request is retried alone so that one bad request never costs the others
their answers. Tensors are fed and read by name, so their order in the config does not matter.
"""

import json

from . import parameters
from .backend import Step, fail, read_inputs, respond
from .batching import pad_and_stack, padding_groups, row_spans, split_rows, valid_lengths
from .runtime import make_session


class TritonPythonModel(Step):
    def setup(self):
        self.session = make_session(self.file(parameters.ONNX_FILE), int(self.parameters[parameters.INTRA_OP_THREADS]),
                                    self.parameters.get(parameters.RUNTIME, "onnxruntime"),
                                    self.parameters.get(parameters.RUNTIME_PRECISION, "f32"))
        self.valid_length = json.loads(self.parameters.get(parameters.VALID_LENGTHS, "{}"))
        self.flat_inputs = {i.name for i in self.session.get_inputs() if len(i.shape) == 1}
        self.flat_outputs = {o.name for o in self.session.get_outputs() if len(o.shape) == 1}
        self.padding_slack = float(self.parameters.get(parameters.PADDING_SLACK, "0"))
        self.width_input = next(name for name in self.input_names if name not in self.flat_inputs)

    def execute(self, requests):
        batch = [read_inputs(request, self.input_names) for request in requests]
        widths = [inputs[self.width_input].shape[1] for inputs in batch]
        rows = [inputs[self.width_input].shape[0] for inputs in batch]
        responses = [None] * len(batch)
        for group in padding_groups(widths, rows, self.padding_slack):
            for index, response in zip(group, self.run_isolated([batch[i] for i in group])):
                responses[index] = response
        return responses

    def run_isolated(self, batch: list[dict]) -> list:
        try:
            return self.run(batch)
        except Exception as error:  # noqa: BLE001 - isolate the failing request below
            if len(batch) == 1:
                return [fail(f"{self.config['name']}: {error}")]
        return [self.run_alone(inputs) for inputs in batch]

    def run_alone(self, inputs):
        try:
            return self.run([inputs])[0]
        except Exception as error:  # noqa: BLE001
            return fail(f"{self.config['name']}: {error}")

    def run(self, batch: list[dict]) -> list:
        feed = {}
        for name in self.input_names:
            stacked = pad_and_stack([inputs[name] for inputs in batch])
            feed[name] = stacked.reshape(-1) if name in self.flat_inputs else stacked
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        known = {**feed, **outputs}
        lengths = {name: valid_lengths(known[source]) for name, source in self.valid_length.items()}
        responses = []
        for span in row_spans([len(inputs[self.width_input]) for inputs in batch]):
            responses.append(respond({
                name: split_rows(value, span, lengths.get(name)).reshape(-1, 1)
                if name in self.flat_outputs else split_rows(value, span, lengths.get(name))
                for name, value in outputs.items()
            }))
        return responses
