"""Heads on top of the pooled encoder features: the joint embedding, MMV's FAC graph, MCN's decoders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


FINE_SPACE_MODALITIES = ("video", "audio")  # MMV's fine space S_va holds vision and audio only


def comparison_space(modalities: Iterable[str], has_fine_space: bool) -> str:
    """The space in which `modalities` are compared (SPEC 8.6); one modality: where it is evaluated alone.

    "va": MMV's fine space S_va, when the model has one (`head: fac`) and every modality is vision or
    audio (MMV Sec. 3.1: "vision and audio are compared in the fine-grained space"; a probe of vision
    or audio features reads S_va too). "joint": otherwise, i.e. any comparison with text (the coarse
    S_vat of a FAC model) and every comparison of a model with one joint space.
    """
    return "va" if has_fine_space and all(m in FINE_SPACE_MODALITIES for m in modalities) else "joint"


class FACHeads(nn.Module):
    """MMV's fine-and-coarse graph (MMV Sec. 3.1 option III) as the released model builds it
    (`mm_embedding_graph='fac_relu'` with the release's head configs, SPEC Sec. 8.6):

        vision -> S_va : Linear -> BN -> ReLU -> Linear (no bias) -> BN    g_v->va  ('mlp@512', bn_after_proj)
        audio  -> S_va : Linear                                            g_a->va  ('linear')
        S_va   -> S_vat: ReLU, then Linear (no bias) -> BN                 g_va->vat ('linear', bn_after_proj),
                         shared by vision and audio (audio meets text through it)
        text   -> S_vat: Linear                                            g_t->vat ('linear')

    The MLP's hidden width is `fine_dim` (the release: 512 hidden, 512 out). A linear layer followed
    by batch norm has no bias (the release's `with_bias=not use_bn_out`; BN's offset replaces it).

    Outputs `video_va`, `audio_va` are the S_va vectors *before* the ReLU: the release's NCE compares
    the projections' outputs (`vid_embd['toaud']`, `aud_embd['tovid']`) and applies the ReLU only on
    the way to S_vat. `video_vat`, `audio_vat` `[B, coarse]`, `text_vat` `[B, P, coarse]`.

    Audio through g_va->vat's batch norm: the release computes audio -> S_vat only at evaluation, "in
    order to not pollute the BN stats ... with audio features during training". Here `audio_vat` is
    also computed in training (no loss uses it; the in-batch audio-text recall reads it), normalised
    with the running statistics and without updating them, as evaluation normalises it: the
    statistics stay vision's.
    """

    def __init__(self, in_dims: Mapping[str, int], fine_dim: int, coarse_dim: int):
        super().__init__()
        self.video_to_va = nn.Sequential(
            nn.Linear(in_dims["video"], fine_dim),
            nn.BatchNorm1d(fine_dim),
            nn.ReLU(inplace=True),
            nn.Linear(fine_dim, fine_dim, bias=False),
            nn.BatchNorm1d(fine_dim),
        )
        self.va_to_vat = nn.Linear(fine_dim, coarse_dim, bias=False)
        self.va_to_vat_norm = nn.BatchNorm1d(coarse_dim)
        if "audio" in in_dims:
            self.audio_to_va = nn.Linear(in_dims["audio"], fine_dim)
        if "text" in in_dims:
            self.text_to_vat = nn.Linear(in_dims["text"], coarse_dim)

    def to_coarse(self, fine: torch.Tensor, update_statistics: bool = True) -> torch.Tensor:
        """g_va->vat on S_va vectors `[B, fine]` -> `[B, coarse]`: ReLU (fac_relu), linear, batch norm.
        `update_statistics=False` normalises with the running statistics even in training."""
        projected = self.va_to_vat(torch.relu(fine))  # not in place: `fine` is an output too
        norm = self.va_to_vat_norm
        if update_statistics or not self.training:
            return norm(projected)
        # eval mode for this call only; through the module's own forward, so that its hooks
        # (ZeRO-3 gathers the partitioned weights there) and the global batch norm's code still apply
        norm.eval()
        try:
            return norm(projected)
        finally:
            norm.train()

    def forward(self, pooled: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """pooled: modality -> `[B, C_m]` (text `[B, P, C_t]`) -> the FAC vectors by space."""
        out = {"video_va": self.video_to_va(pooled["video"])}  # [B, fine]
        out["video_vat"] = self.to_coarse(out["video_va"])  # [B, coarse]
        if "audio" in pooled:
            out["audio_va"] = self.audio_to_va(pooled["audio"])  # [B, fine]
            out["audio_vat"] = self.to_coarse(out["audio_va"], update_statistics=False)  # [B, coarse]
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
