"""Instance-level contrastive losses: MMS (CMCM eq. 1 / MCN eq. 3), InfoNCE (MC3 eq. 1),
MIL-NCE (MMV eqs. 1-2 with Miech et al.'s multiple-instance positives).

All take the global batch (gathered by the caller through `mmdist.dist`); rows are queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mms_loss(sim: torch.Tensor, margin: float) -> torch.Tensor:
    """Masked Margin Softmax, CMCM eq. 1 / MCN eq. 3 (SPEC 8.1: bidirectional, un-normalised).

    sim [B, B]: plain dot products, positives on the diagonal. The margin is subtracted
    from the diagonal, then cross-entropy over rows (A -> B) plus cross-entropy over
    columns (B -> A), each averaged over the batch.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"mms_loss: sim must be square [B, B], got {list(sim.shape)}")
    targets = torch.arange(sim.shape[0], device=sim.device)
    margined = sim - margin * torch.eye(sim.shape[0], dtype=sim.dtype, device=sim.device)
    return F.cross_entropy(margined, targets) + F.cross_entropy(margined.t(), targets)


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE from `query` to `key`, MC3 eq. 1 (one direction, L_{i,j}).

    query, key [B, D], L2-normalised here; logits q @ k.T / temperature [B, B];
    cross-entropy with the diagonal as targets, averaged over the batch.
    """
    if query.shape != key.shape or query.dim() != 2:
        raise ValueError(f"info_nce: query and key must both be [B, D], got {list(query.shape)} and {list(key.shape)}")
    logits = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).t() / temperature  # [B, B]
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


def mil_nce(
    video: torch.Tensor,
    text: torch.Tensor,
    temperature: float,
    text_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """MIL-NCE, MMV eq. 2 with the positive set P(x) of Miech et al. (MMV Sec. 3.1).

    video [B, D]; text [B, P, D] (P candidate narrations per clip, padded);
    text_mask [B, P] marks real candidates (every clip needs at least one).
    Both are L2-normalised; scores x[i, j, p] = v_i . t_{j,p} / temperature.
    For clip i:
      numerator   = logsumexp_p x[i, i, p]                         (its own candidates)
      denominator = logsumexp over x[i, :, :] (v_i against every candidate of every clip)
                    concatenated with x[:, i, :] (every video against clip i's candidates)
    as in the reference implementation (the positives appear in both halves).
    Loss = mean over clips of (denominator - numerator). With P = 1 this is the
    single-positive NCE of MMV eq. 2 with negatives taken in both directions.
    """
    if video.dim() != 2 or text.dim() != 3 or text.shape[0] != video.shape[0] or text.shape[2] != video.shape[1]:
        raise ValueError(f"mil_nce: expected video [B, D] and text [B, P, D], got {list(video.shape)} "
                         f"and {list(text.shape)}")
    batch, candidates = text.shape[:2]
    if text_mask is None:
        text_mask = torch.ones(batch, candidates, dtype=torch.bool, device=text.device)
    elif text_mask.shape != (batch, candidates):
        raise ValueError(f"mil_nce: text_mask must be [{batch}, {candidates}], got {list(text_mask.shape)}")
    if not bool(text_mask.any(dim=1).all()):
        empty = (~text_mask.any(dim=1)).nonzero().squeeze(1).tolist()
        raise ValueError(f"mil_nce: clip rows {empty} have no valid text candidate; drop them before the loss")

    v = F.normalize(video, dim=-1)
    t = F.normalize(text, dim=-1)
    scores = torch.einsum("id,jpd->ijp", v, t) / temperature  # [B, B, P]
    scores = scores.masked_fill(~text_mask.unsqueeze(0), float("-inf"))  # padded candidates never count
    own = scores.diagonal(dim1=0, dim2=1).t()  # [B, P]: own[i, p] = scores[i, i, p]
    numerator = torch.logsumexp(own, dim=1)  # [B]
    both_sides = torch.cat([scores, scores.transpose(0, 1)], dim=1).flatten(1)  # [B, 2 * B * P]
    denominator = torch.logsumexp(both_sides, dim=1)  # [B]
    return (denominator - numerator).mean()
