"""CTC logits -> transcript -> BERT input ids and mask, for all requests of a batch at once.

The work is `text.TranscriptTokenizer` (no Triton), shared with the export's drift checks.
"""

from . import parameters
from .backend import Step, strings
from .batching import row_spans
from .text import TranscriptTokenizer


class TritonPythonModel(Step):
    def setup(self):
        self.text = TranscriptTokenizer(self.file(parameters.TOKENIZER_FILE), self.file(parameters.CTC_VOCAB_FILE))

    def execute(self, requests):
        batch = [self.read(r) for r in requests]
        transcripts = [t for inputs in batch for t in self.text.transcribe(inputs["logits"], inputs["length"])]
        responses = []
        for span in row_spans([len(inputs["logits"]) for inputs in batch]):
            ids, mask = self.text.tokenize(transcripts[span])
            responses.append(self.respond({"transcript": strings(transcripts[span]), "ids": ids, "mask": mask}))
        return responses
