"""Heads on top of the pooled encoder features: the joint embedding, MMV's FAC graph, MCN's decoders."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class GatedEmbedding(nn.Module):
    """f_high's linear + gating unit: y = W x + b, then y * sigmoid(W_g y + b_g).

    The "GLU" after pooling in CMCM Table 4 and MCN's gated embedding unit (Miech et al.,
    `Gated_Embedding_Unit`: a linear layer then context gating). No L2 normalisation: MMS
    compares plain dot products (SPEC Sec. 8.1).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.gate = nn.Linear(out_dim, out_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        projected = self.linear(pooled)  # [..., D]
        return projected * torch.sigmoid(self.gate(projected))


class FACHeads(nn.Module):
    """MMV's fine-and-coarse graph (MMV Sec. 3.1 option III, SPEC Sec. 8.6).

    vision -> S_va: two-layer MLP with batch norm and ReLU (g_v->va, the non-linear head);
    audio  -> S_va: linear (g_a->va);
    S_va   -> S_vat: linear g_va->vat, shared by vision and audio;
    text   -> S_vat: linear (g_t->vat).
    """

    def __init__(self, in_dims: Mapping[str, int], fine_dim: int, coarse_dim: int):
        super().__init__()
        self.video_to_va = nn.Sequential(
            nn.Linear(in_dims["video"], fine_dim),
            nn.BatchNorm1d(fine_dim),
            nn.ReLU(inplace=True),
            nn.Linear(fine_dim, fine_dim),
        )
        self.va_to_vat = nn.Linear(fine_dim, coarse_dim)
        if "audio" in in_dims:
            self.audio_to_va = nn.Linear(in_dims["audio"], fine_dim)
        if "text" in in_dims:
            self.text_to_vat = nn.Linear(in_dims["text"], coarse_dim)

    def forward(self, pooled: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """pooled: modality -> `[B, C_m]` (text `[B, P, C_t]`) -> the FAC vectors by space."""
        out = {"video_va": self.video_to_va(pooled["video"])}  # [B, fine]
        out["video_vat"] = self.va_to_vat(out["video_va"])  # [B, coarse]
        if "audio" in pooled:
            out["audio_va"] = self.audio_to_va(pooled["audio"])  # [B, fine]
            out["audio_vat"] = self.va_to_vat(out["audio_va"])  # [B, coarse]
        if "text" in pooled:
            out["text_vat"] = self.text_to_vat(pooled["text"])  # [B, P, coarse]
        return out


class Decoder(nn.Module):
    """MCN reconstruction decoder (MCN eqs. 8-9, SPEC Sec. 8.5): Linear-ReLU-Linear-ReLU from the
    embedding back to the pooled encoder features that fed the embedding head.

    The final ReLU follows the authors' code; the targets are non-negative (post-ReLU features).
    """

    def __init__(self, embed_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)
