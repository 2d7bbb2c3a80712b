"""The four served networks as modules that take zero-padded batches plus lengths or masks.

Each reproduces, for every utterance of a padded batch, what the research code computes for that
utterance alone:
- audio is normalised per utterance over its valid samples, inside the graph;
- HuBERT gets the frame-level attention mask;
- wav2vec2's first conv layer normalises over time (GroupNorm): here it takes its statistics over
  each utterance's valid frames only, and the encoder masks padded frames;
- the fusion head (`model.fusion.FusionHead`) masks padded frames and tokens.
Each network's signature is its forward arguments (named as its input tensors) and `outputs` (the
names of what forward returns, in order); the export checks both against core.specs and binds
tensors by these names, never by position.
"""

import torch
from torch import nn

from ser_triton.core import glossary
from ser_triton.model.fusion import sequence_mask

NORM_EPS = 1e-7
"""Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon."""


def normalise_waveform(waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-7) over each utterance's valid samples; padding stays zero."""
    mask = sequence_mask(lengths, waveform.shape[1]).to(waveform.dtype)
    count = lengths.to(waveform.dtype)[:, None]
    mean = (waveform * mask).sum(dim=1, keepdim=True) / count
    centred = (waveform - mean) * mask
    variance = (centred * centred).sum(dim=1, keepdim=True) / count
    return centred / torch.sqrt(variance + NORM_EPS)


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm with one group per channel (wav2vec2's first layer), over valid frames only."""
    mask = sequence_mask(lengths, x.shape[2]).to(x.dtype)[:, None, :]
    count = lengths.to(x.dtype)[:, None, None]
    mean = (x * mask).sum(dim=2, keepdim=True) / count
    centred = (x - mean) * mask
    variance = (centred * centred).sum(dim=2, keepdim=True) / count
    normalised = centred / torch.sqrt(variance + norm.eps)
    return normalised * norm.weight[None, :, None] + norm.bias[None, :, None]


def conv_output_length(lengths: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    return torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1


def encode_frames(base, waveform, lengths):
    """A wav2vec2-family base model (HubertModel or Wav2Vec2Model) over a padded batch.

    Returns (last_hidden_state [B, T, D], frames [B]). A group-norm feature extractor gets its
    first layer's statistics from valid frames only.
    """
    x = normalise_waveform(waveform, lengths)[:, None, :]
    layers = base.feature_extractor.conv_layers
    first = layers[0]
    if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm):
        x = first.conv(x)
        x = first.activation(masked_group_norm(x, conv_output_length(lengths, first.conv), first.layer_norm))
        layers = layers[1:]
    for layer in layers:
        x = layer(x)
    features = x.transpose(1, 2)
    frames = base._get_feat_extract_output_lengths(lengths).to(torch.int64)
    projected = base.feature_projection(features)
    if isinstance(projected, tuple):  # wav2vec2 also returns the normalised features
        projected = projected[0]
    frame_mask = sequence_mask(frames, projected.shape[1])
    if base.training and projected.shape[1] >= base.config.mask_time_length:
        # SpecAugment over valid frames, as HubertModel.forward applies it in training (ser-train); never in eval
        projected = base._mask_hidden_states(projected, attention_mask=frame_mask.long())
    hidden = base.encoder(projected, attention_mask=frame_mask).last_hidden_state
    return hidden, frames


class AcousticEncoder(nn.Module):
    """waveform [B, S], waveform_length [B] -> acoustic_features [B, T, D], acoustic_frames [B]."""

    outputs = ("acoustic_features", "acoustic_frames")

    def __init__(self, hubert):
        super().__init__()
        self.hubert = hubert

    def forward(self, waveform, waveform_length):
        return encode_frames(self.hubert, waveform, waveform_length)


class ASR(nn.Module):
    """waveform [B, S], waveform_length [B] -> ctc_logits [B, T, V], logit_frames [B]."""

    outputs = ("ctc_logits", "logit_frames")

    def __init__(self, ctc_model):
        super().__init__()
        self.ctc = ctc_model

    def forward(self, waveform, waveform_length):
        hidden, frames = encode_frames(self.ctc.wav2vec2, waveform, waveform_length)
        return self.ctc.lm_head(hidden), frames


class TextEncoder(nn.Module):
    """input_ids [B, L], attention_mask [B, L] -> text_features [B, L, D]."""

    outputs = ("text_features",)

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


WRAPPERS = {
    glossary.ACOUSTIC_ENCODER.name: AcousticEncoder,
    glossary.ASR.name: ASR,
    glossary.TEXT_ENCODER.name: TextEncoder,
    glossary.FUSION_HEAD.name: None,  # the research head is itself the served network
}


def served_network(model, name: str) -> nn.Module:
    """The served module of one network (see core.glossary), in eval mode, from a
    model.sources.Components or a ModelBuilder (which builds it now)."""
    component = model.network(name)
    wrapper = WRAPPERS[name]
    return (component if wrapper is None else wrapper(component)).eval()

