"""CTC logits -> transcripts (greedy, as the research code) -> padded BERT ids and masks.

The BERT tokenizer is the research tokenizer's own `tokenizer.json` (lower-casing, [CLS]/[SEP],
truncation at 512) run by the `tokenizers` library; an empty transcript becomes [CLS] [SEP].
No Triton import: the `ctc_tokenize` step and the export's drift checks share this code.
"""

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .ctc import CTCDecoder

TOKENIZER_FILE = "tokenizer.json"
CTC_VOCAB_FILE = "ctc_vocab.json"


class TranscriptTokenizer:
    def __init__(self, tokenizer_file: Path, ctc_vocab_file: Path):
        ctc = json.loads(Path(ctc_vocab_file).read_text())
        self.decoder = CTCDecoder(ctc["vocab"], ctc["blank"], ctc["delimiter"], ctc["clean_up"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))

    @classmethod
    def from_directory(cls, directory: Path) -> "TranscriptTokenizer":
        return cls(Path(directory) / TOKENIZER_FILE, Path(directory) / CTC_VOCAB_FILE)

    def transcribe(self, logits: np.ndarray, frames: np.ndarray) -> list[str]:
        """One transcript per row of logits [b, T, V], each over its valid frames [b]."""
        return [self.decoder.decode_logits(row, int(n)) for row, n in zip(logits, frames.reshape(-1))]

    def tokenize(self, transcripts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both [len(transcripts), longest], zero-padded."""
        encodings = self.tokenizer.encode_batch(transcripts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, encoding in enumerate(encodings):
            ids[i, : len(encoding.ids)] = encoding.ids
            mask[i, : len(encoding.ids)] = 1
        return ids, mask


def write_tokenizer_assets(directory: Path, bert_tokenizer, ctc_tokenizer, max_tokens: int) -> None:
    """The research tokenizers (transformers' BertTokenizerFast and Wav2Vec2CTCTokenizer) as the files
    TranscriptTokenizer reads: the export writes them beside the step, training into its cache."""
    directory.mkdir(parents=True, exist_ok=True)
    backend = bert_tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_tokens)
    backend.save(str(directory / TOKENIZER_FILE))
    vocab = ctc_tokenizer.get_vocab()
    (directory / CTC_VOCAB_FILE).write_text(json.dumps({
        "vocab": sorted(vocab, key=vocab.get),
        "blank": ctc_tokenizer.pad_token,
        "delimiter": ctc_tokenizer.word_delimiter_token,
        "clean_up": bool(ctc_tokenizer.clean_up_tokenization_spaces),
    }, indent=1))
