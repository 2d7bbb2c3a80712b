"""Last step of the ensemble: probabilities -> the label with the highest probability.

It also hands the probabilities on unchanged, so that each ensemble output has a producer that
no other step reads from.
"""

import json

import numpy as np

from .triton import Step, read_inputs, respond, strings


class TritonPythonModel(Step):
    def setup(self):
        self.labels = json.loads(self.parameters["labels"])

    def execute(self, requests):
        responses = []
        for request in requests:
            probabilities = read_inputs(request, self.input_names)[self.input_names[0]]
            labels = [self.labels[i] for i in np.argmax(probabilities, axis=-1)]
            emotion, passed_on = self.output_names
            responses.append(respond({emotion: strings(labels), passed_on: probabilities}))
        return responses
