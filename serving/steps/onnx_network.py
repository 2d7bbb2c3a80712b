"""Runs one exported ONNX network with ONNX Runtime inside the Python backend (CPU target).

Requests of different lengths arrive together (ragged dynamic batching). Those of similar
length are zero-padded into one batch (padding may add at most `padding_slack` of extra work),
run once, and each request gets back exactly its own rows, cut to its valid length. If a batch
fails as a whole, each request is retried alone so that one bad request never costs the others
their answers. Tensors are fed and read by name, so their order in the config does not matter.

Memory (audio networks, whose activations grow with the audio): a run holds at most
`max_batch_samples` padded samples; before the largest run yet, ONNX Runtime's arena
(serving.steps.runtime) is emptied, so that it grows once to what that run needs and every
smaller run reuses it, instead of adding a region per new length on top of the ones shorter runs
left (HuBERT-large over the bench's 40 lengths: +0.36 GB instead of +0.47 GB). A request longer
than `max_batch_samples` runs alone, and its run gives all it grew back. Inputs are read where
Triton put them, and a single request's outputs go out as ONNX Runtime returned them (batched
ones are cut per request: one copy each).
"""

import json

import numpy as np

from . import parameters
from .backend import Step, fail, read_inputs, respond
from .batching import pad_and_stack, padding_groups, row_spans, split_rows, valid_lengths
from .runtime import make_session, run_options


class TritonPythonModel(Step):
    def setup(self):
        self.session = make_session(self.file(parameters.ONNX_FILE), int(self.parameters[parameters.INTRA_OP_THREADS]),
                                    self.parameters.get(parameters.RUNTIME, "onnxruntime"),
                                    self.parameters.get(parameters.RUNTIME_PRECISION, "f32"))
        self.valid_length = json.loads(self.parameters.get(parameters.VALID_LENGTHS, "{}"))
        self.flat_inputs = {i.name for i in self.session.get_inputs() if len(i.shape) == 1}
        self.flat_outputs = {o.name for o in self.session.get_outputs() if len(o.shape) == 1}
        self.padding_slack = float(self.parameters.get(parameters.PADDING_SLACK, "0"))
        self.max_padded = int(self.parameters.get(parameters.MAX_BATCH_SAMPLES, "0")) or None
        self.give_back = run_options(shrink=True)
        self.largest_run = 0
        if self.max_padded is not None:  # audio networks: a waveform and its length
            shortest = int(self.parameters[parameters.MIN_SAMPLES])
            self.shortest_audio = {name: np.full(1, shortest, np.int64) if name in self.flat_inputs
                                   else np.zeros((1, shortest), np.float32) for name in self.input_names}
        self.width_input = next(name for name in self.input_names if name not in self.flat_inputs)

    def execute(self, requests):
        batch = [read_inputs(request, self.input_names) for request in requests]
        widths = [inputs[self.width_input].shape[1] for inputs in batch]
        rows = [inputs[self.width_input].shape[0] for inputs in batch]
        responses = [None] * len(batch)
        for group in padding_groups(widths, rows, self.padding_slack, self.max_padded):
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

    def arena_for(self, feed: dict):
        """The run options for this feed, after emptying the arena if it is the largest run yet."""
        if self.max_padded is None:
            return None
        padded = feed[self.width_input].size
        if padded > self.largest_run:
            self.session.run(self.output_names, self.shortest_audio, self.give_back)  # gives back all it holds
            self.largest_run = padded
        if padded > self.max_padded:  # a long request alone: give back what it grew
            self.largest_run = 0
            return self.give_back
        return None

    def run(self, batch: list[dict]) -> list:
        feed = {}
        for name in self.input_names:
            stacked = pad_and_stack([inputs[name] for inputs in batch])
            feed[name] = stacked.reshape(-1) if name in self.flat_inputs else stacked
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feed, self.arena_for(feed))))
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
