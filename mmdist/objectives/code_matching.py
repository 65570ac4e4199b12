"""Cross-Modal Code Matching, CMCM eqs. 4-7 (SPEC Sec. 3 and 8.2-8.3).

A clip's fine-grained features define a distribution over the shared codebook
(eqs. 4-5); two clips are similar when their distributions are (negative symmetric
cross-entropy, eq. 6); the loss is a softmax over those similarities (eq. 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmdist.contracts import ModelOutput
from mmdist.vq import squared_distances

PROB_FLOOR = 1e-8  # probabilities are clamped here before the log (SPEC Sec. 3)


def code_distribution(
    features: torch.Tensor, codebook: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """P(e_v | H_i), CMCM eqs. 4-5.

    features [B, L, D]: projected fine-grained features f^M(h) (after the modality-wise
    batch norm); codebook [V, D] (no gradient flows into it, SPEC 8.3); mask [B, L]
    marks valid positions. Per position a softmax over the NEGATIVE EUCLIDEAN distance
    (not squared) to every codeword (eq. 4), then the mean over valid positions (eq. 5).
    Returns [B, V]; a clip without any valid position gets an all-zero row.
    Computed in fp32 (at least) even under bf16 autocast.
    """
    if features.dim() != 3 or codebook.dim() != 2 or features.shape[2] != codebook.shape[1]:
        raise ValueError(f"code_distribution: expected features [B, L, D] and codebook [V, D], got "
                         f"{list(features.shape)} and {list(codebook.shape)}")
    batch, length, dim = features.shape
    if mask is not None and mask.shape != (batch, length):
        raise ValueError(f"code_distribution: mask must be [{batch}, {length}], got {list(mask.shape)}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        work = torch.promote_types(features.dtype, torch.float32)
        flat = features.reshape(batch * length, dim).to(work)  # [B*L, D]
        # sqrt of a clamped square: finite gradient when a feature sits exactly on a codeword
        distance = squared_distances(flat, codebook.detach().to(work)).clamp_min(1e-12).sqrt()  # [B*L, V]
        per_position = F.softmax(-distance, dim=1).view(batch, length, -1)  # eq. 4, [B, L, V]
        if mask is None:
            return per_position.mean(dim=1)  # eq. 5, [B, V]
        weights = mask.to(work).unsqueeze(2)  # [B, L, 1]
        return (per_position * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # [B, V]


def with_code_probs(outputs: ModelOutput) -> ModelOutput:
    """A model's outputs with `code_probs` (modality -> `[B, V]`, eqs. 4-5) in place of the
    `code_features` and `codebook` they are computed from; outputs without a codebook unchanged.

    Called on each rank's own outputs, before the gather: the distributions are gathered, never
    the wider features, and the codebook (the same on every rank) is not gathered at all.
    Gradient flows into the projected features, not into the codebook (SPEC 8.3).
    """
    if "code_features" not in outputs:
        return outputs
    out = {key: value for key, value in outputs.items() if key not in ("code_features", "codebook")}
    out["code_probs"] = {
        m: code_distribution(features, outputs["codebook"], outputs["code_mask"][m])  # [B, V]
        for m, features in outputs["code_features"].items()
    }
    return out


def code_similarity(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """S_code, CMCM eq. 6: S[i, j] = sum_v p_a[i,v] log p_b[j,v] + sum_v p_b[j,v] log p_a[i,v].

    p_a, p_b [B, V] -> [B, B], as two matrix products (memory O(B^2 + BV); never a
    [B, B, V] tensor). Probabilities are clamped at 1e-8 inside the log.
    """
    if p_a.dim() != 2 or p_b.dim() != 2 or p_a.shape[1] != p_b.shape[1]:
        raise ValueError(f"code_similarity: expected [B, V] inputs, got {list(p_a.shape)} and {list(p_b.shape)}")
    log_a = p_a.clamp_min(PROB_FLOOR).log()
    log_b = p_b.clamp_min(PROB_FLOOR).log()
    return p_a @ log_b.t() + log_a @ p_b.t()  # [B, B]


def cmcm_loss(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """L_CMCM, CMCM eq. 7: cross-entropy over the rows of S_code (A queries, B candidates),
    diagonal targets, averaged over the batch. No temperature (SPEC 8.2); recipes apply
    it in both directions and sum them.
    """
    similarity = code_similarity(p_a, p_b)  # [B, B]
    return F.cross_entropy(similarity, torch.arange(similarity.shape[0], device=similarity.device))
