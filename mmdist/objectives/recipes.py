"""Each recipe's total loss, composed from the pure losses (a recipe is a config, not a subclass).

    cmcm    L = sum_pairs L_MMS + alpha * sum_pairs (L_CMCM(a,b) + L_CMCM(b,a)) (+ commitment)       CMCM eq. 8
    mc3     L = sum_ordered_pairs InfoNCE [+ w * L_consensus in the refine stage]                    MC3 eq. 4
            (recipe.refine_contrastive=false: the refine stage drops InfoNCE, Table 2's ablation)
    mc3_vq  mc3 + alpha * CMCM over every modality pair (+ commitment), the shared codebook variant
    mcn     L = sum_pairs L_MMS + w_c * mean_m L_cluster,m + w_r * sum_m L_reconstruct,m             MCN eq. 1
    mmv     L = lambda_va NCE(v, a) + lambda_vt MIL-NCE(v, t)                                         MMV eq. 1

`outputs` is the model's output (mmdist.contracts.ModelOutput), with a codebook its code distributions
computed on each rank (`with_code_probs`), already gathered over ranks (global batch B; see `mmdist.dist`
for why every rank computes the global loss). Missing modalities
follow MMV Sec. 3.1: a pairwise term uses only the clips where both modalities are
present (rows and candidate columns), and because each term is a mean over its valid
clips, those clips are up-weighted so the term keeps its total weight; a term without
any valid clip contributes 0. Per-sample terms that need every modality (consensus)
use the clips where all are present; per-modality terms (cluster, reconstruction)
use the clips where that modality is present.
"""

from __future__ import annotations

from itertools import combinations, permutations
from typing import Mapping

import torch

from mmdist.config import ConfigError, check_section
from mmdist.config_schema.model import RECIPES
from mmdist.contracts import MODALITIES, ModelOutput, clip_vectors, own_narration
from mmdist.objectives.clustering import OnlineKMeans, cluster_loss, reconstruction_loss
from mmdist.objectives.code_matching import cmcm_loss
from mmdist.objectives.consensus import INVERSES, consensus_loss
from mmdist.objectives.contrastive import info_nce, mil_nce, mms_loss

KMEANS_KEYS = ("num_clusters", "queue_batches", "refit_every", "iters")  # OnlineKMeans arguments


def validate_recipe(recipe: Mapping) -> None:
    """Raise ConfigError naming the first unknown, missing or inconsistent `recipe.*` key: its keys and
    types by the config schema's class of `recipe.name` (mmdist/config_schema/), then its values."""
    recipe = check_section(recipe, RECIPES, "recipe")
    name, modalities = recipe["name"], list(recipe["modalities"])
    if len(modalities) < 2 or len(set(modalities)) != len(modalities) or not set(modalities) <= set(MODALITIES):
        raise ConfigError(f"recipe.modalities: need 2-3 distinct names from {MODALITIES}, got {modalities}")
    if name in ("mc3", "mc3_vq"):
        if recipe["anchor"] not in modalities:
            raise ConfigError(f"recipe.anchor: {recipe['anchor']!r} is not in recipe.modalities {modalities}")
        others = {m for m in modalities if m != recipe["anchor"]}
        if set(recipe["consensus_alphas"]) != others:
            raise ConfigError(f"recipe.consensus_alphas: need exactly the non-anchor modalities {sorted(others)}, "
                              f"got {sorted(recipe['consensus_alphas'])}")
        if recipe["consensus_inverse"] not in INVERSES:
            raise ConfigError(f"recipe.consensus_inverse must be one of {list(INVERSES)}, "
                              f"got {recipe['consensus_inverse']!r}")
    if name == "mmv" and "video" not in modalities:
        raise ConfigError("recipe.modalities: mmv pairs every modality with video, which is missing")


def kmeans_from_recipe(recipe: Mapping, dim: int, seed: int, agree=None) -> OnlineKMeans | None:
    """The OnlineKMeans an mcn recipe needs (None for the other recipes); `agree`: OnlineKMeans's."""
    validate_recipe(recipe)
    if recipe["name"] != "mcn":
        return None
    return OnlineKMeans(dim=dim, seed=seed, agree=agree, **{key: recipe["kmeans"][key] for key in KMEANS_KEYS})


def recipe_loss(
    recipe: Mapping, outputs: ModelOutput, step: int, kmeans: OnlineKMeans | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of `recipe` on the gathered `outputs` at training `step`.

    Returns (total, terms): terms maps each term's UNWEIGHTED value (`loss_mms`,
    `loss_cmcm`, ...) to a float, plus `stage` (0 align, 1 refine) for mc3 recipes;
    the total itself is not repeated there. See the module docstring for each recipe.
    The recipe is checked once, before training (`validate_recipe` at start-up), not at every step.
    """
    out = _Outputs(outputs, list(recipe["modalities"]), needs_embeddings=recipe["name"] != "mmv")
    compose = {"cmcm": _cmcm, "mc3": _mc3, "mc3_vq": _mc3, "mcn": _mcn, "mmv": _mmv}[recipe["name"]]
    total, terms = compose(recipe, out, step, kmeans)
    report = {key: float(value.detach()) if torch.is_tensor(value) else float(value) for key, value in terms.items()}
    return total, report


class _Outputs:
    """Read access to the gathered outputs, with the valid-clip masks of MMV Sec. 3.1."""

    def __init__(self, outputs: ModelOutput, modalities: list[str], needs_embeddings: bool):
        self.raw, self.modalities = outputs, modalities
        for key in ("embeddings", "present") if needs_embeddings else ("present",):
            for name in modalities:
                if name not in outputs.get(key, {}):
                    raise ValueError(f"recipe outputs: outputs[{key!r}] has no {name!r}")
        if "text" in modalities and "text_candidate_mask" not in outputs:
            raise ValueError("recipe outputs: 'text_candidate_mask' is required with the text modality")

    def get(self, *path: str):
        node = self.raw
        for i, key in enumerate(path):
            if key not in node:
                raise ValueError(f"recipe outputs: missing {'.'.join(path[: i + 1])}")
            node = node[key]
        return node

    def embedding(self, name: str) -> torch.Tensor:
        """[B, D]; for text, the clip's own narration."""
        return clip_vectors(name, self.raw["embeddings"][name])

    def present(self, name: str) -> torch.Tensor:
        """[B] bool; text counts only when the clip's own narration is real."""
        present = self.raw["present"][name].bool()
        return present & own_narration(self.raw["text_candidate_mask"]).bool() if name == "text" else present

    def rows(self, *names: str) -> torch.Tensor:
        """Indices of the clips where every modality in `names` is present: [n]."""
        valid = torch.stack([self.present(name) for name in names]).all(dim=0)
        return valid.nonzero().squeeze(1)

    def zero(self) -> torch.Tensor:
        """0 connected to every output tensor, so a term without valid clips still backpropagates."""
        return sum(t.sum() * 0.0 for t in _tensors(self.raw) if t.is_floating_point())


def _tensors(node):
    if isinstance(node, torch.Tensor):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from _tensors(value)
    elif isinstance(node, (tuple, list)):
        for value in node:
            yield from _tensors(value)


def _mms_pairs(recipe, out: _Outputs) -> torch.Tensor:
    """sum over unordered pairs of L_MMS on dot-product similarities (MCN eq. 2, SPEC 8.1)."""
    total = out.zero()
    for a, b in combinations(out.modalities, 2):
        rows = out.rows(a, b)
        if rows.numel():
            sim = out.embedding(a)[rows] @ out.embedding(b)[rows].t()  # [n, n]
            total = total + mms_loss(sim, margin=recipe["mms_margin"])
    return total


def _cmcm_pairs(out: _Outputs) -> torch.Tensor:
    """sum over unordered pairs of both CMCM directions (CMCM eq. 7, SPEC 8.2): summed like the two
    directions of L_MMS, so that alpha weighs CMCM against MMS as eq. 8's alpha does."""
    total = out.zero()
    for a, b in combinations(out.modalities, 2):
        rows = out.rows(a, b)
        if rows.numel():
            p_a, p_b = out.get("code_probs", a)[rows], out.get("code_probs", b)[rows]  # [n, V]
            total = total + cmcm_loss(p_a, p_b) + cmcm_loss(p_b, p_a)
    return total


def _commitment(out: _Outputs) -> torch.Tensor:
    return out.raw["commitment_loss"] if "commitment_loss" in out.raw else out.zero()


def _cmcm(recipe, out: _Outputs, step: int, kmeans) -> tuple[torch.Tensor, dict]:
    if "code_probs" not in out.raw:
        # the baseline of CMCM Table 3 row (f), "w/o VQ & w/o CMCM": MMS alone, no codebook
        if recipe["cmcm_alpha"] != 0:
            raise ValueError("recipe cmcm: recipe.cmcm_alpha > 0 needs the codebook (model.codebook.enabled=true); "
                             "set recipe.cmcm_alpha=0 for the MMS-only baseline")
        mms = _mms_pairs(recipe, out)
        return mms, {"loss_mms": mms}
    mms, cmcm, commitment = _mms_pairs(recipe, out), _cmcm_pairs(out), _commitment(out)
    total = mms + recipe["cmcm_alpha"] * cmcm + commitment
    return total, {"loss_mms": mms, "loss_cmcm": cmcm, "loss_commitment": commitment}


def _mc3(recipe, out: _Outputs, step: int, kmeans) -> tuple[torch.Tensor, dict]:
    contrastive = out.zero()
    for a, b in permutations(out.modalities, 2):  # MC3 eq. 1 over ordered pairs
        rows = out.rows(a, b)
        if rows.numel():
            contrastive = contrastive + info_nce(
                out.embedding(a)[rows], out.embedding(b)[rows], recipe["temperature"]
            )
    refine = step >= recipe["align_steps"]  # Sec. 4.1: align (contrastive only), then refine
    with torch.set_grad_enabled(refine and torch.is_grad_enabled()):
        rows = out.rows(*out.modalities)
        consensus = out.zero()
        if rows.numel():
            embeddings = {name: out.embedding(name)[rows] for name in out.modalities}
            consensus = consensus_loss(embeddings, recipe["anchor"], recipe["consensus_alphas"],
                                       recipe["consensus_inverse"])
    # MC3 Table 2 "w/o L_contrastive": the refine stage trains the consensus alone
    keep_contrastive = not refine or recipe["refine_contrastive"]
    total = (contrastive if keep_contrastive else 0.0) + (recipe["consensus_weight"] * consensus if refine else 0.0)
    terms = {"loss_info_nce": contrastive, "loss_consensus": consensus, "stage": float(refine)}
    if recipe["name"] == "mc3_vq":
        cmcm, commitment = _cmcm_pairs(out), _commitment(out)
        total = total + recipe["cmcm_alpha"] * cmcm + commitment
        terms.update(loss_cmcm=cmcm, loss_commitment=commitment)
    return total, terms


def _mcn(recipe, out: _Outputs, step: int, kmeans: OnlineKMeans | None) -> tuple[torch.Tensor, dict]:
    if kmeans is None:
        raise ValueError("recipe mcn: recipe_loss needs the OnlineKMeans (see kmeans_from_recipe)")
    mms = _mms_pairs(recipe, out)
    present = torch.stack([out.present(m) for m in out.modalities]).to(out.embedding(out.modalities[0]).dtype)
    stacked = torch.stack([out.embedding(m) for m in out.modalities])  # [M, B, D]
    fused = (stacked * present.unsqueeze(2)).sum(0) / present.sum(0).clamp_min(1.0).unsqueeze(1)  # eq. 4, [B, D]
    targets = kmeans.step(fused.detach(), step)  # [B] or None before the first fit
    cluster, reconstruct = out.zero(), out.zero()
    for name in out.modalities:
        rows = out.rows(name)
        if targets is not None and rows.numel():  # eq. 7: mean over the modalities
            cluster = cluster + cluster_loss(out.embedding(name)[rows], kmeans.centroids, targets[rows],
                                             margin=recipe["cluster_margin"]) / len(out.modalities)
        if rows.numel():  # eq. 9: sum over the modalities
            prediction, target = out.get("reconstruction", name)
            reconstruct = reconstruct + reconstruction_loss(prediction[rows], target[rows])
    total = mms + recipe["cluster_weight"] * cluster + recipe["reconstruct_weight"] * reconstruct
    return total, {"loss_mms": mms, "loss_cluster": cluster, "loss_reconstruct": reconstruct}


def _mmv(recipe, out: _Outputs, step: int, kmeans) -> tuple[torch.Tensor, dict]:
    total, terms = out.zero(), {}
    video_present = out.raw["present"]["video"].bool()
    if "audio" in out.modalities:
        rows = (video_present & out.raw["present"]["audio"].bool()).nonzero().squeeze(1)
        nce = out.zero()
        if rows.numel():  # NCE is MIL-NCE with the one positive (MMV Sec. 3.1)
            video_va, audio_va = out.get("fac", "video_va")[rows], out.get("fac", "audio_va")[rows]
            nce = mil_nce(video_va, audio_va.unsqueeze(1), recipe["temperature"])
        total, terms["loss_nce_va"] = total + recipe["lambda_va"] * nce, nce
    if "text" in out.modalities:
        candidates = out.raw["text_candidate_mask"].bool()  # [B, P]
        text_present = out.raw["present"]["text"].bool() & candidates.any(dim=1)
        rows = (video_present & text_present).nonzero().squeeze(1)
        milnce = out.zero()
        if rows.numel():
            video_vat, text_vat = out.get("fac", "video_vat")[rows], out.get("fac", "text_vat")[rows]
            milnce = mil_nce(video_vat, text_vat, recipe["temperature"], text_mask=candidates[rows])
        total, terms["loss_milnce_vt"] = total + recipe["lambda_vt"] * milnce, milnce
    return total, terms
