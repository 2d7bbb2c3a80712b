"""Greedy CTC decoding exactly as the research code's `Wav2Vec2Processor.batch_decode` does it.

argmax per frame, merge repeats, drop the blank (`<pad>`), `|` becomes a space, strip; special
tokens such as `<unk>` stay as text, as they do there.

The same pass knows each character's frames, so `decode_words` also gives every word of the
transcript with the frames it spans: from the first frame of its first character to the end of
the last frame of its last (as transformers' `output_word_offsets` counts them).
"""

from dataclasses import dataclass

import numpy as np

CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
"""transformers' clean_up_tokenization, applied when the CTC tokenizer enables it. Each one only
deletes spaces, so every word of a cleaned transcript is one or more decoded words run together."""


@dataclass(frozen=True)
class Word:
    """One word of a transcript: its text and its CTC frames [first, end)."""

    text: str
    first: int
    end: int


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

    def decode_words(self, ids: np.ndarray) -> tuple[str, list[Word]]:
        """The transcript (as `decode` gives it) and its words, each with its frames; the words,
        joined by single spaces, are the transcript's words (an empty transcript has none)."""
        ids = np.asarray(ids).reshape(-1)
        text = self.decode(ids)
        if not text:
            return text, []
        firsts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))  # where each run starts
        ends = np.concatenate([firsts[1:], [ids.size]])
        decoded, current = [], None  # the words between delimiters, before any clean-up
        for token, first, end in zip(ids[firsts].tolist(), firsts.tolist(), ends.tolist()):
            if token == self.blank:
                continue
            piece = self.tokens[token]
            if piece == " ":
                current = None
            elif current is None:
                current = [piece, first, end]
                decoded.append(current)
            else:
                current[0] += piece
                current[2] = end
        return text, _joined(text.split(), decoded)

    def decode_logits_words(self, logits: np.ndarray, frames: int) -> tuple[str, list[Word]]:
        return self.decode_words(logits[:frames].argmax(axis=-1))


def _joined(targets: list[str], decoded: list[list]) -> list[Word]:
    """The transcript's words (`targets`), each made of the decoded words that the clean-up ran
    together (it only deletes spaces), with the frames from the first one's start to the last one's end."""
    words, position = [], 0
    for target in targets:
        text, first, end = decoded[position]
        position += 1
        while text != target:
            if position >= len(decoded) or not target.startswith(text):
                raise ValueError(f"the decoded words {decoded} do not make up the transcript's words {targets}")
            text, end = text + decoded[position][0], decoded[position][2]
            position += 1
        words.append(Word(text, first, end))
    return words
