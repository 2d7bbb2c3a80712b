"""The research repository's model class, written again from its description (reference/model.md), on
its own: none of this project's networks. A checkpoint that loads into it with strict=True, and gives
its logits, is in the research format in name and in meaning.

    logits = fc([mean_t(fa); mean_t(fl)]), fa, fl from one shared CmGI and one shared gate
"""

import math

import torch
from torch import nn
from transformers import BertModel, HubertModel


class TemporalGatedFusion(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.transform = nn.Linear(2 * dim, dim)

    def forward(self, x, cross):
        gate = torch.sigmoid(self.transform(torch.cat([x, cross], dim=-1)))
        return x * gate + cross * (1 - gate)


class CmGI(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.temporal_fusion = TemporalGatedFusion(dim)
        self.dim = dim

    def cross(self, queries, keys):
        scores = self.q_proj(queries) @ self.k_proj(keys).transpose(1, 2) / math.sqrt(self.dim)
        return torch.softmax(scores, dim=-1) @ self.v_proj(keys)

    def forward(self, xa, xl):
        return (self.temporal_fusion(xa, self.cross(xa, xl)), self.temporal_fusion(xl, self.cross(xl, xa)))


class EnhancedSERModel(nn.Module):
    def __init__(self, hubert_config, bert_config, num_labels=4):
        super().__init__()
        self.hubert = HubertModel(hubert_config)
        self.bert = BertModel(bert_config)
        dim = hubert_config.hidden_size
        self.proj_bert = nn.Linear(bert_config.hidden_size, dim)
        self.cmg = CmGI(dim)
        self.fc = nn.Linear(2 * dim, num_labels)

    def forward(self, input_values, input_ids, attention_mask):
        """One utterance (no padding): normalised audio [1, S], its transcript's BERT ids [1, L]."""
        xa = self.hubert(input_values).last_hidden_state
        xl = self.proj_bert(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        fa, fl = self.cmg(xa, xl)
        return self.fc(torch.cat([fa.mean(dim=1), fl.mean(dim=1)], dim=-1))
