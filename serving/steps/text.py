"""CTC logits -> transcripts (greedy, as the research code) and their word times -> padded BERT ids and masks.

The BERT tokenizer is the research tokenizer's own `tokenizer.json` (lower-casing, [CLS]/[SEP],
truncation at 512) run by the `tokenizers` library; an empty transcript becomes [CLS] [SEP].
The CTC vocabulary file also says how many audio samples one CTC frame advances (`frame_samples`,
320 for wav2vec2: 20 ms at 16 kHz), which turns each word's frames into seconds.
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
        self.frame_samples = ctc.get("frame_samples")
        """Audio samples per CTC frame; None in the file of an export made before word times."""
        self.vocab_file = Path(ctc_vocab_file)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))

    @classmethod
    def from_directory(cls, directory: Path) -> "TranscriptTokenizer":
        return cls(Path(directory) / TOKENIZER_FILE, Path(directory) / CTC_VOCAB_FILE)

    def transcribe(self, logits: np.ndarray, frames: np.ndarray) -> list[str]:
        """One transcript per row of logits [b, T, V], each over its valid frames [b]."""
        return [self.decoder.decode_logits(row, int(n)) for row, n in zip(logits, frames.reshape(-1))]

    def transcribe_words(self, logits: np.ndarray, frames: np.ndarray, sample_rate: int) -> list[tuple[str, str]]:
        """(transcript, its words as JSON) per row of logits [b, T, V], each over its valid frames [b]:
        [{"word", "start", "end"}] in seconds from the start of the row's audio."""
        if self.frame_samples is None:
            raise ValueError(f"{self.vocab_file} does not say how long a CTC frame is (frame_samples): it was "
                             "written by an export made before word times; re-run `make export`")
        rows = []
        for row, count in zip(logits, frames.reshape(-1)):
            text, words = self.decoder.decode_logits_words(row, int(count))
            rows.append((text, json.dumps([{"word": word.text, "start": word.first * self.frame_samples / sample_rate,
                                            "end": word.end * self.frame_samples / sample_rate} for word in words])))
        return rows

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


def write_tokenizer_assets(directory: Path, bert_tokenizer, ctc_tokenizer, max_tokens: int,
                           frame_samples: int | None = None) -> None:
    """The research tokenizers (transformers' BertTokenizerFast and Wav2Vec2CTCTokenizer) as the files
    TranscriptTokenizer reads: the export writes them beside the step, training into its cache. With
    `frame_samples` (the ASR's `inputs_to_logits_ratio`: audio samples per CTC frame), the CTC
    vocabulary also times the transcript's words, which the serving step needs (the export gives it)."""
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
        **({} if frame_samples is None else {"frame_samples": int(frame_samples)}),
    }, indent=1))
