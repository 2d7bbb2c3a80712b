"""CTC logits -> transcript (greedy, as the research code) -> BERT input ids and mask.

The BERT tokenizer is the research tokenizer's own `tokenizer.json` (lower-casing, [CLS]/[SEP],
truncation at 512), run by the `tokenizers` library; an empty transcript becomes [CLS] [SEP].
All requests of a batch are tokenized in one call.
"""

import json

import numpy as np
from tokenizers import Tokenizer

from .batching import row_spans
from .ctc import CTCDecoder
from .triton import Step, read_inputs, respond, strings


class TritonPythonModel(Step):
    def setup(self):
        ctc = json.loads(self.file("ctc_vocab_file").read_text())
        self.decoder = CTCDecoder(ctc["vocab"], ctc["blank"], ctc["delimiter"], ctc["clean_up"])
        self.tokenizer = Tokenizer.from_file(str(self.file("tokenizer_file")))
        self.logits_name, self.frames_name = self.input_names
        self.transcript_name, self.ids_name, self.mask_name = self.output_names

    def execute(self, requests):
        batch = [read_inputs(r, self.input_names) for r in requests]
        transcripts = [
            self.decoder.decode_logits(logits, int(frames))
            for inputs in batch
            for logits, frames in zip(inputs[self.logits_name], inputs[self.frames_name].reshape(-1))
        ]
        encodings = self.tokenizer.encode_batch(transcripts)
        responses = []
        for span in row_spans([len(inputs[self.logits_name]) for inputs in batch]):
            rows = encodings[span]
            width = max(len(e.ids) for e in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, encoding in enumerate(rows):
                ids[i, : len(encoding.ids)] = encoding.ids
                mask[i, : len(encoding.ids)] = 1
            responses.append(respond({
                self.transcript_name: strings(transcripts[span]), self.ids_name: ids, self.mask_name: mask,
            }))
        return responses
