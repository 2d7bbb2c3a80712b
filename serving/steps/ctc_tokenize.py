"""CTC logits -> transcript and its words' times -> BERT input ids and mask, for all requests of a batch at once.

The work is `text.TranscriptTokenizer` (no Triton), shared with the export's drift checks.
"""

from . import parameters
from .backend import Step, strings
from .batching import row_spans
from .text import TranscriptTokenizer


class TritonPythonModel(Step):
    def setup(self):
        self.text = TranscriptTokenizer(self.file(parameters.TOKENIZER_FILE), self.file(parameters.CTC_VOCAB_FILE))
        self.sample_rate = int(self.parameters[parameters.SAMPLE_RATE])
        if self.text.frame_samples is None:  # said when the model loads, not at the first request
            raise ValueError(f"{self.text.vocab_file} has no frame_samples (the CTC frame's length): it was written "
                             "by an export made before word times; re-run `make export`")

    def execute(self, requests):
        batch = [self.read(r) for r in requests]
        rows = [row for inputs in batch
                for row in self.text.transcribe_words(inputs["logits"], inputs["length"], self.sample_rate)]
        responses = []
        for span in row_spans([len(inputs["logits"]) for inputs in batch]):
            transcripts = [transcript for transcript, _ in rows[span]]
            ids, mask = self.text.tokenize(transcripts)
            responses.append(self.respond({"transcript": strings(transcripts), "ids": ids, "mask": mask,
                                           "words": strings([words for _, words in rows[span]])}))
        return responses
