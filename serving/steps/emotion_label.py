"""Last step of the ensemble: probabilities -> the label with the highest probability.

It also hands the probabilities on unchanged, so that each ensemble output has a producer that
no other step reads from.
"""

import json

import numpy as np

from . import parameters
from .backend import Step, strings


class TritonPythonModel(Step):
    def setup(self):
        self.labels = json.loads(self.parameters[parameters.LABELS])

    def execute(self, requests):
        responses = []
        for request in requests:
            probabilities = self.read(request)["probabilities"]
            labels = [self.labels[i] for i in np.argmax(probabilities, axis=-1)]
            responses.append(self.respond({"label": strings(labels), "probabilities": probabilities}))
        return responses
