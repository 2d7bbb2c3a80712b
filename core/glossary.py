"""One name per network: the glossary every other module reads.

A network's `name` is its model folder in the Triton repository, its attribute on
`model.sources.Components`, its wrapper class in `model.networks` (CamelCase of the name), its
`--flag` on the command lines (dashes for underscores) and its name in the docs. The research
checkpoint's key prefixes map to the networks here and nowhere else.

Data path: audio -> acoustic_encoder (HuBERT) ----------------------------------> fusion_head
                 -> asr (wav2vec2 CTC) -> transcript -> text_encoder (BERT) ----^
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    name: str
    summary: str
    pretrained: str | None
    """Default Hugging Face id (or local directory) of its pretrained weights; None: built here."""
    checkpoint_prefixes: tuple[str, ...] = ()
    """Key prefixes of the research checkpoint that hold its weights."""
    keeps_prefix: bool = False
    """Whether its checkpoint keys keep the prefix (the fusion head's parameters are named
    `cmg.*`, `proj_bert.*`, `fc.*` in the module too) or lose it (`hubert.x` -> `x`)."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


ACOUSTIC_ENCODER = Network(
    "acoustic_encoder", "HuBERT-large: audio -> acoustic features", "facebook/hubert-large-ls960-ft",
    ("hubert.",))
ASR = Network(
    "asr", "wav2vec2-large CTC: audio -> character logits (the transcript)", "facebook/wav2vec2-large-960h")
TEXT_ENCODER = Network(
    "text_encoder", "BERT-base: transcript tokens -> text features", "bert-base-uncased", ("bert.",))
FUSION_HEAD = Network(
    "fusion_head", "cross-modal gated attention over both feature sequences -> 4 emotion logits", None,
    ("cmg.", "proj_bert.", "fc."), keeps_prefix=True)

NETWORKS = (ACOUSTIC_ENCODER, ASR, TEXT_ENCODER, FUSION_HEAD)
"""In the order the export writes them."""

BY_NAME = {network.name: network for network in NETWORKS}
