"""The serving step's CTC decoding and tokenization give the research code's exact strings and ids."""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import BertTokenizerFast

from ser_triton.serving.steps.text import write_tokenizer_assets
from ser_triton.model.sources import BERT_MAX_TOKENS, CTC_VOCAB, offline_bert_vocab_dir, offline_ctc_tokenizer
from ser_triton.serving.steps.ctc import CTCDecoder
from ser_triton.serving.steps.text import CTC_VOCAB_FILE, TOKENIZER_FILE


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_components):
    directory = tmp_path_factory.mktemp("assets")
    write_tokenizer_assets(directory, tiny_components.bert_tokenizer, tiny_components.ctc_tokenizer, BERT_MAX_TOKENS,
                           tiny_components.config("asr").inputs_to_logits_ratio)
    return directory


def test_ctc_vocab_asset(assets):
    ctc = json.loads((assets / CTC_VOCAB_FILE).read_text())
    assert ctc["vocab"] == list(CTC_VOCAB) and ctc["blank"] == "<pad>" and ctc["delimiter"] == "|"


def id_sequences():
    rng = np.random.default_rng(0)
    yield np.array([], dtype=np.int64)
    yield np.zeros(30, dtype=np.int64)  # all blank: empty transcript
    yield np.array([0, 11, 11, 0, 11, 5, 5, 4, 4, 0, 4, 11, 8, 0, 0])  # repeats split by blanks, double spaces
    yield np.array([4, 4, 7, 0, 28, 4, 0, 6, 4])  # leading/trailing delimiters, apostrophe
    yield np.array([1, 2, 3, 7, 3, 3, 0, 2])  # special tokens stay as text
    for _ in range(200):
        yield rng.integers(0, len(CTC_VOCAB), rng.integers(1, 80))
    for _ in range(100):  # blank-heavy, like real CTC output
        ids = rng.integers(0, len(CTC_VOCAB), rng.integers(1, 120))
        ids[rng.random(ids.size) < 0.6] = 0
        yield ids


def test_ctc_decoding_equals_the_research_processor(assets):
    hf = offline_ctc_tokenizer()
    ctc = json.loads((assets / CTC_VOCAB_FILE).read_text())
    decoder = CTCDecoder(ctc["vocab"], ctc["blank"], ctc["delimiter"], ctc["clean_up"])
    for ids in id_sequences():
        expected = hf.batch_decode(ids[None])[0] if ids.size else hf.decode([])
        assert decoder.decode(ids) == expected, ids.tolist()


def test_ctc_decoding_with_clean_up(assets):
    hf = offline_ctc_tokenizer()
    hf.clean_up_tokenization_spaces = True
    decoder = CTCDecoder(list(CTC_VOCAB), clean_up=True)
    ids = np.array([8, 4, 28, 4, 13, 0, 4, 5])  # "O ' S E" -> clean-up joins " ' "
    assert decoder.decode(ids) == hf.decode(ids.tolist())


TRANSCRIPTS = ["", "HELLO WORLD", "I DON'T KNOW WHAT YOU'RE TALKING ABOUT", "  SPACES  AROUND ",
               "<unk>HELLO</s>", "QZX'J VKWB", "ONE " * 700]


def test_tokenizer_json_gives_the_research_ids(assets):
    served = Tokenizer.from_file(str(assets / TOKENIZER_FILE))
    research = BertTokenizerFast.from_pretrained(offline_bert_vocab_dir(), model_max_length=BERT_MAX_TOKENS)
    for text in TRANSCRIPTS:
        expected = research(text, truncation=True)["input_ids"]
        assert served.encode(text).ids == expected, text
    assert served.encode("").ids == [101, 102]  # empty transcript -> [CLS] [SEP]
    assert len(served.encode(TRANSCRIPTS[-1]).ids) == BERT_MAX_TOKENS
