"""Greedy CTC decoding exactly as the research code's `Wav2Vec2Processor.batch_decode` does it.

argmax per frame, merge repeats, drop the blank (`<pad>`), `|` becomes a space, strip; special
tokens such as `<unk>` stay as text, as they do there.
"""

import numpy as np

CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
"""transformers' clean_up_tokenization, applied when the CTC tokenizer enables it."""


class CTCDecoder:
    def __init__(self, vocab: list[str], blank: str = "<pad>", delimiter: str = "|",
                 clean_up: bool = False):
        self.tokens = np.array([" " if t == delimiter else t for t in vocab], dtype=object)
        self.blank = vocab.index(blank)
        self.clean_up = clean_up

    def decode(self, ids: np.ndarray) -> str:
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            return ""
        keep = np.ones(ids.size, dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        ids = ids[keep]
        text = "".join(self.tokens[ids[ids != self.blank]]).strip()
        if self.clean_up:
            for before, after in CLEAN_UPS:
                text = text.replace(before, after)
        return text

    def decode_logits(self, logits: np.ndarray, frames: int) -> str:
        return self.decode(logits[:frames].argmax(axis=-1))
