"""The research fusion head (EnhancedSERModel minus its encoders), served with padding masks.

Parameter names match the research checkpoint (`cmg.q_proj`, `cmg.temporal_fusion.transform`,
`proj_bert`, `fc`). `research_logits` is the research code's forward pass, unmasked, for one
utterance; `forward` is the served network: lengths and masks in, so that padded frames and tokens
take no part in the attention or the means and a zero-padded batch gives each utterance what it
gives alone.
"""

import math

import torch
from torch import nn


def sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


class TemporalGatedFusion(nn.Module):
    """One gate, shared by both directions: x * g + cross * (1 - g), g = sigmoid(W [x; cross])."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.transform(torch.cat([x, cross], dim=-1)))
        return x * gate + cross * (1 - gate)


class CrossModalGatedInteraction(nn.Module):
    """CmGI: one set of q/k/v projections shared by both attention directions."""

    def __init__(self, dim: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.temporal_fusion = TemporalGatedFusion(dim)
        self.scale = 1.0 / math.sqrt(dim)

    def attend(self, queries, keys, key_mask):
        scores = torch.matmul(self.q_proj(queries), self.k_proj(keys).transpose(1, 2)) * self.scale
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, :], torch.finfo(scores.dtype).min)
        return torch.matmul(torch.softmax(scores, dim=-1), self.v_proj(keys))

    def forward(self, acoustic, text, acoustic_mask=None, text_mask=None):
        fused_acoustic = self.temporal_fusion(acoustic, self.attend(acoustic, text, text_mask))
        fused_text = self.temporal_fusion(text, self.attend(text, acoustic, acoustic_mask))
        return fused_acoustic, fused_text


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of [B, T, D], counting only the frames where mask [B, T] is true."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class FusionHead(nn.Module):
    """Projects BERT features to the acoustic width, fuses both modalities, classifies."""

    outputs = ("logits", "probabilities")
    """What the served forward returns, in order."""

    def __init__(self, acoustic_dim: int = 1024, text_dim: int = 768, num_labels: int = 4):
        super().__init__()
        self.proj_bert = nn.Linear(text_dim, acoustic_dim)
        self.cmg = CrossModalGatedInteraction(acoustic_dim)
        self.fc = nn.Linear(2 * acoustic_dim, num_labels)

    def research_logits(self, acoustic, text, acoustic_mask=None, text_mask=None) -> torch.Tensor:
        """The research forward pass; without masks exactly the research code's."""
        text = self.proj_bert(text)
        fused_acoustic, fused_text = self.cmg(acoustic, text, acoustic_mask, text_mask)
        pooled = torch.cat(
            [masked_mean(fused_acoustic, acoustic_mask), masked_mean(fused_text, text_mask)], dim=-1
        )
        return self.fc(pooled)

    def forward(self, acoustic_features, acoustic_frames, text_features, attention_mask):
        """The served network: padded batches with lengths and masks -> (logits, probabilities)."""
        acoustic_mask = sequence_mask(acoustic_frames, acoustic_features.shape[1])
        logits = self.research_logits(acoustic_features, text_features, acoustic_mask, attention_mask.bool())
        return logits, torch.softmax(logits, dim=-1)
