"""The research model as it trains: EnhancedSERModel's parameters under their research names.

`ResearchModel` is the fusion head (model.fusion.FusionHead) with the two encoders it fine-tunes as
its `hubert` and `bert` attributes, so `state_dict()` is the research checkpoint as it is
(`hubert.*`, `bert.*`, `cmg.*`, `proj_bert.*`, `fc.*`), which the research class and
`make export CHECKPOINT=` load. Its forward runs the served networks' code (model.networks:
per-utterance normalisation, attention masks, masked pooling), so a padded training batch gives
each clip what the server gives it alone. Built from model.sources.ModelBuilder: the networks
`make export` would build, a checkpoint to go on from included.
"""

import torch
from torch import nn

from ser_triton.core.glossary import ACOUSTIC_ENCODER, FUSION_HEAD, TEXT_ENCODER
from ser_triton.model.fusion import FusionHead
from ser_triton.model.networks import encode_frames

DROPOUT_FIELDS = {
    ACOUSTIC_ENCODER.name: ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
                            "final_dropout", "layerdrop"),
    TEXT_ENCODER.name: ("hidden_dropout_prob", "attention_probs_dropout_prob"),
}
"""The configuration fields that randomise an encoder in training (HubertConfig, BertConfig)."""


def config_changes(network: str, dropout: float | None, spec_augment: float | None = None) -> dict:
    """Configuration changes that set every dropout of an encoder to `dropout` (0 also ends HuBERT's
    SpecAugment) and HuBERT's SpecAugment masking share; none for None. They change no weight: the
    networks are built as the preset builds them (SpecAugment is turned off, not its mask removed)."""
    changes = {} if dropout is None else dict.fromkeys(DROPOUT_FIELDS[network], dropout)
    if network != ACOUSTIC_ENCODER.name:
        return changes
    if spec_augment:
        changes["mask_time_prob"] = spec_augment
    if dropout == 0 or spec_augment == 0:
        changes["apply_spec_augment"] = False
    return changes


class ResearchModel(FusionHead):
    _keys_to_ignore_on_save = None
    """The Trainer reads this transformers attribute when a resumed checkpoint lacks keys, as ours lack the frozen
    encoders' on purpose (loop.py's `_save`: they come from the model's sources again)."""

    def __init__(self, hubert, bert, head: FusionHead):
        super().__init__(head.proj_bert.out_features, head.proj_bert.in_features, head.fc.out_features)
        self.load_state_dict(head.state_dict())
        self.hubert = hubert
        self.bert = bert
        self.register_buffer("class_weights", None, persistent=False)

    @classmethod
    def build(cls, builder, encoder_dropout: float | None = None, spec_augment: float | None = None
              ) -> "ResearchModel":
        """The networks `builder` makes (with its checkpoint's weights), in training mode."""
        hubert, bert = (builder.network(name, **config_changes(name, encoder_dropout, spec_augment))
                        for name in (ACOUSTIC_ENCODER.name, TEXT_ENCODER.name))
        return cls(hubert, bert, builder.network(FUSION_HEAD.name)).train()

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        self.class_weights = weights

    def freeze(self, acoustic_encoder: bool, text_branch: str) -> None:
        """Stop the gradients of what does not train (frozen encoders also run in eval mode: no dropout).
        text_branch "off": BERT frozen and `proj_bert.weight` zero and frozen, so every token's feature is
        `proj_bert.bias`, and the head's answer does not depend on the transcript."""
        for module, frozen in ((self.hubert, acoustic_encoder), (self.bert, text_branch != "train")):
            module.requires_grad_(not frozen)
            module.frozen = frozen
        if text_branch == "off":
            with torch.no_grad():
                self.proj_bert.weight.zero_()
            self.proj_bert.weight.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in (self.hubert, self.bert):
            if getattr(module, "frozen", False):
                module.eval()
        return self

    def encode(self, waveform, waveform_length, input_ids, attention_mask):
        """(acoustic features, frames, text features): what the encoders give the head."""
        acoustic, frames = encode_frames(self.hubert, waveform, waveform_length)
        text = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return acoustic, frames, text

    def forward(self, attention_mask, labels=None, waveform=None, waveform_length=None, input_ids=None,
                acoustic_features=None, acoustic_frames=None, text_features=None):
        """Audio and token ids (end to end), or the encoders' cached outputs (frozen) -> logits, loss."""
        if acoustic_features is None:
            acoustic_features, acoustic_frames, text_features = self.encode(waveform, waveform_length, input_ids,
                                                                            attention_mask)
        logits, _ = super().forward(acoustic_features, acoustic_frames, text_features, attention_mask)
        output = {"logits": logits}
        if labels is not None:  # the batch's mean: N processes of B / N clips give one process's B
            losses = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
            if self.class_weights is not None:
                losses = losses * self.class_weights[labels]
            output["loss"] = losses.mean()
        return output


def class_weights(labels: list[int], classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised to a mean of 1 over the classes present."""
    counts = torch.bincount(torch.tensor(labels), minlength=classes).double()
    weights = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()
