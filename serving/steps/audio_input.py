"""First step of the ensemble: checks each request's audio and states its length.

Bad audio (empty, shorter than one encoder frame, NaN/Inf, longer than the configured maximum)
gets an error response that says what was wrong and what the limit is; the other requests of
the batch go on. Samples far outside [-1, 1] are accepted: each utterance is normalised to zero
mean and unit variance inside the encoders.
"""

import numpy as np

from . import parameters
from .backend import Step, fail


class TritonPythonModel(Step):
    def setup(self):
        self.sample_rate = int(self.parameters[parameters.SAMPLE_RATE])
        self.min_samples = int(self.parameters[parameters.MIN_SAMPLES])
        self.max_seconds = float(self.parameters[parameters.MAX_AUDIO_SECONDS])
        self.max_samples = int(self.max_seconds * self.sample_rate)

    def problem(self, audio: np.ndarray) -> str | None:
        name, samples = self.inputs["audio"], audio.shape[-1]
        if samples == 0:
            return f"{name} is empty: send mono {self.sample_rate} Hz float32 samples"
        if samples < self.min_samples:
            return (f"{name} is too short: {samples} samples ({samples / self.sample_rate * 1000:.1f} ms); "
                    f"at least {self.min_samples} samples ({self.min_samples / self.sample_rate * 1000:.0f} ms) "
                    f"at {self.sample_rate} Hz are needed")
        if samples > self.max_samples:
            return (f"{name} is too long: {samples / self.sample_rate:.1f} s; the limit is "
                    f"{self.max_seconds:g} s ({self.max_samples} samples at {self.sample_rate} Hz): "
                    "split the recording into shorter segments (the ser client does this)")
        bad = np.count_nonzero(~np.isfinite(audio))
        if bad:
            return f"{name} has {bad} NaN or infinite samples: send finite float32 samples"
        return None

    def execute(self, requests):
        responses = []
        for request in requests:
            audio = self.read(request)["audio"]
            problem = self.problem(audio)
            if problem:
                responses.append(fail(problem, bad_input=True))
                continue
            lengths = np.full((audio.shape[0], 1), audio.shape[1], dtype=np.int64)
            responses.append(self.respond({"waveform": audio, "length": lengths}))
        return responses
