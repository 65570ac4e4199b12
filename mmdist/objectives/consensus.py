"""Multimodal consensus coding, MC3 eqs. 2-3 (SPEC Sec. 3 and 8.4).

Per sample, every non-anchor modality's cosine similarity with the anchor is mapped
to [0, 1] and reshaped by K_i(x) = ((x + 1) / 2)^alpha_i; the bottleneck (minimum) is
mapped back to a similarity, a detached target each pair is pulled (or pushed) to.
MC3 leaves K^-1 open; SPEC 8.4 makes both readings config (`recipe.consensus_inverse`):

    unscaled      K^-1(y) = 2y - 1: one target c for every pair. With alpha_video = 0.5 a
                  bottleneck video pair sits below its own c and is pulled UP toward it.
    per_modality  pair i's target is K_i^-1(min_j K_j(s_j)) = 2 (min_j K_j(s_j))^(1/alpha_i) - 1,
                  in pair i's own scale: the bottleneck pair's target is itself, so only the
                  other pairs move (MC3 Fig. 3 caption: "push the remaining embeddings away").
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F


def consensus_scores(sims: Mapping[str, torch.Tensor], alphas: Mapping[str, float]) -> torch.Tensor:
    """c = K^-1(min_i K_i(s_i)) = 2 * min_i ((s_i + 1) / 2)^alpha_i - 1, MC3 eq. 2.

    sims: non-anchor modality name -> [B] cosine similarity with the anchor;
    alphas: modality name -> alpha_i. Returns c [B] (not detached: the loss detaches).
    """
    if not sims:
        raise ValueError("consensus_scores: need at least one non-anchor modality in `sims`")
    missing = sorted(set(sims) - set(alphas))
    if missing:
        raise ValueError(f"consensus_scores: no alpha for modality {missing[0]!r} (alphas has {sorted(alphas)})")
    # K^-1 is increasing, so c = min_i K^-1(K_i(s_i)). Computed per modality, a pair with alpha = 1
    # maps to its own similarity exactly: when it is the bottleneck its gap |s_i - c| is exactly 0
    # (subgradient 0), not rounding noise whose sign would decide a +-1 gradient.
    mapped = [s if alphas[name] == 1 else _unscaled_inverse(_scaled(s, alphas[name])) for name, s in sims.items()]
    return torch.stack(mapped).amin(dim=0)  # [B]


def _scaled(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """K_i(s) = ((s + 1) / 2)^alpha. (s + 1) / 2 can leave [0, 1] by rounding when |s| = 1, and a
    fractional power of a negative number is NaN, so clamp before scaling."""
    return ((s + 1) / 2).clamp(0.0, 1.0).pow(alpha)


def _unscaled_inverse(y: torch.Tensor) -> torch.Tensor:
    """K^-1(y) = 2y - 1, the inverse of the unscaled map (SPEC 8.4)."""
    return 2 * y - 1


INVERSES = ("unscaled", "per_modality")


def consensus_targets(
    sims: Mapping[str, torch.Tensor], alphas: Mapping[str, float], inverse: str
) -> dict[str, torch.Tensor]:
    """Each pair's target similarity [B] under the `inverse` reading (module docstring, SPEC 8.4).

    `unscaled` gives every pair c = consensus_scores(sims, alphas); `per_modality` gives pair i
    K_i^-1(min_j K_j(s_j)). Not detached: the loss detaches.
    """
    if inverse == "unscaled":
        c = consensus_scores(sims, alphas)
        return {name: c for name in sims}
    if inverse != "per_modality":
        raise ValueError(f"consensus inverse must be one of {INVERSES}, got {inverse!r}")
    consensus_scores(sims, alphas)  # the same argument checks
    bottleneck = torch.stack([_scaled(s, alphas[name]) for name, s in sims.items()]).amin(dim=0)  # [B] in [0, 1]
    targets = {}
    for name, s in sims.items():
        # K_i^-1(K_i(s_i)) would be s_i up to rounding; where pair i IS the bottleneck its target is
        # s_i exactly, so its gap is exactly 0 (no +-1 subgradient from rounding noise).
        mapped = _unscaled_inverse(bottleneck.pow(1.0 / alphas[name]))
        is_bottleneck = _scaled(s, alphas[name]) <= bottleneck
        targets[name] = torch.where(is_bottleneck, s, mapped)
    return targets


def consensus_loss(
    embeddings: Mapping[str, torch.Tensor], anchor: str, alphas: Mapping[str, float], inverse: str
) -> torch.Tensor:
    """L_consensus, MC3 eq. 3: mean over samples of sum_{i != anchor} |s_i - c_i|.

    embeddings: modality name -> [B, D] (L2-normalised here); s_i = e_i . e_anchor [B];
    c_i = consensus_targets(..., inverse)[i] is DETACHED (SPEC 8.4): only the pairs move toward it.
    """
    if anchor not in embeddings:
        raise ValueError(f"consensus_loss: anchor {anchor!r} not among the modalities {sorted(embeddings)}")
    e_anchor = F.normalize(embeddings[anchor], dim=-1)  # [B, D]
    sims = {
        name: (F.normalize(e, dim=-1) * e_anchor).sum(dim=-1)  # [B]
        for name, e in embeddings.items()
        if name != anchor
    }
    targets = consensus_targets(sims, alphas, inverse)
    gaps = torch.stack([(s - targets[name].detach()).abs() for name, s in sims.items()])  # [n_modalities - 1, B]
    return gaps.sum(dim=0).mean()
