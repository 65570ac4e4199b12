"""Each recipe's total against a composition of the loop references; missing modalities; config checks."""

from itertools import combinations, permutations
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import loop_reference as ref
from mmdist.objectives import OnlineKMeans, kmeans_from_recipe, recipe_loss, validate_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "recipe"
RECIPES = ["cmcm", "mc3", "mc3_vq", "mcn", "mmv"]
MODALITIES = ["video", "audio", "text"]


def load_recipe(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml").recipe)


def make_outputs(seed: int, batch: int = 6, dim: int = 4, candidates: int = 3, codes: int = 5) -> dict:
    """Synthetic gathered model outputs in float64, every modality present."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    mask = torch.rand(batch, candidates, generator=g) < 0.6
    mask[:, 0] = True
    return {
        "embeddings": {"video": randn(batch, dim), "audio": randn(batch, dim), "text": randn(batch, candidates, dim)},
        "present": {m: torch.ones(batch, dtype=torch.bool) for m in MODALITIES},
        "text_candidate_mask": mask,
        "code_probs": {m: torch.softmax(2 * randn(batch, codes), dim=1) for m in MODALITIES},
        "commitment_loss": randn(()).abs(),
        "fac": {"video_va": randn(batch, 6), "audio_va": randn(batch, 6), "video_vat": randn(batch, 5),
                "text_vat": randn(batch, candidates, 5)},
        "reconstruction": {m: (randn(batch, 7), randn(batch, 7)) for m in MODALITIES},
    }


def own(outputs, name, rows=slice(None)):
    e = outputs["embeddings"][name]
    return (e[:, 0] if name == "text" else e)[rows]


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_yaml_is_valid(name):
    recipe = load_recipe(name)
    assert recipe["name"] == name
    validate_recipe(recipe)
    validate_recipe(OmegaConf.load(CONFIGS / f"{name}.yaml").recipe)  # DictConfig works too


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda r: r.update(temprature=0.1), "recipe.temprature"),
        (lambda r: r.pop("anchor"), "recipe.anchor"),
        (lambda r: r.update(anchor="smell"), "recipe.anchor"),
        (lambda r: r.update(consensus_alphas={"video": 0.5}), "recipe.consensus_alphas"),
        (lambda r: r.update(modalities=["video", "smell"]), "recipe.modalities"),
        (lambda r: r.update(name="mc4"), "recipe.name"),
    ],
)
def test_bad_recipe_names_the_key(edit, key):
    recipe = load_recipe("mc3")
    edit(recipe)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_recipe(recipe)


def test_bad_kmeans_key_is_named():
    recipe = load_recipe("mcn")
    recipe["kmeans"]["itters"] = recipe["kmeans"].pop("iters")
    with pytest.raises(ValueError, match=r"recipe\.kmeans\.(iters|itters)"):
        validate_recipe(recipe)


def test_missing_output_is_named():
    outputs = make_outputs(0)
    del outputs["code_probs"]["audio"]
    with pytest.raises(ValueError, match=r"code_probs\.audio"):
        recipe_loss(load_recipe("cmcm"), outputs, step=0)


def test_kmeans_from_recipe():
    assert kmeans_from_recipe(load_recipe("mc3"), dim=4, seed=0) is None
    kmeans = kmeans_from_recipe(load_recipe("mcn"), dim=4, seed=0)
    assert isinstance(kmeans, OnlineKMeans) and kmeans.num_clusters == 256
    with pytest.raises(ValueError, match="OnlineKMeans"):
        recipe_loss(load_recipe("mcn"), make_outputs(0), step=0)


# ---------------------------------------------------------------- totals against loops


@pytest.mark.parametrize("seed", [0, 1])
def test_cmcm_total(seed):
    recipe, outputs = load_recipe("cmcm"), make_outputs(seed)
    total, terms = recipe_loss(recipe, outputs, step=0)
    v, a = own(outputs, "video"), own(outputs, "audio")
    p_v, p_a = outputs["code_probs"]["video"], outputs["code_probs"]["audio"]
    mms = ref.mms(v @ a.t(), 0.001)
    cmcm = ref.cmcm(p_v, p_a) + ref.cmcm(p_a, p_v)  # both directions summed (SPEC 8.2)
    commitment = outputs["commitment_loss"].item()
    assert total.item() == pytest.approx(mms + 0.1 * cmcm + commitment, rel=1e-10)
    assert terms["loss_mms"] == pytest.approx(mms, rel=1e-10)
    assert terms["loss_cmcm"] == pytest.approx(cmcm, rel=1e-10)
    assert terms["loss_commitment"] == pytest.approx(commitment)
    assert set(terms) == {"loss_mms", "loss_cmcm", "loss_commitment"}


def _contrastive_reference(outputs, temperature, rows=slice(None)):
    return sum(ref.info_nce(own(outputs, a, rows), own(outputs, b, rows), temperature)
               for a, b in permutations(MODALITIES, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_mc3_align_then_refine(seed):
    recipe, outputs = load_recipe("mc3"), make_outputs(seed)
    contrastive = _contrastive_reference(outputs, 0.07)
    consensus = ref.consensus({m: own(outputs, m) for m in MODALITIES}, "audio", {"video": 0.5, "text": 1.0}, recipe["consensus_inverse"])

    total, terms = recipe_loss(recipe, outputs, step=recipe["align_steps"] - 1)
    assert terms["stage"] == 0.0
    assert total.item() == pytest.approx(contrastive, rel=1e-10)
    assert terms["loss_consensus"] == pytest.approx(consensus, rel=1e-10)  # reported, not trained

    total, terms = recipe_loss(recipe, outputs, step=recipe["align_steps"])
    assert terms["stage"] == 1.0
    assert total.item() == pytest.approx(contrastive + consensus, rel=1e-10)

    no_align = dict(recipe, align_steps=0)  # the "w/o align-stage" ablation
    assert recipe_loss(no_align, outputs, step=0)[1]["stage"] == 1.0

    # "w/o L_contrastive": contrastive in the align stage, the consensus alone in refine
    consensus_only = dict(recipe, refine_contrastive=False)
    assert recipe_loss(consensus_only, outputs, step=0)[0].item() == pytest.approx(contrastive, rel=1e-10)
    total, terms = recipe_loss(consensus_only, outputs, step=recipe["align_steps"])
    assert total.item() == pytest.approx(consensus, rel=1e-10)
    assert terms["loss_info_nce"] == pytest.approx(contrastive, rel=1e-10)  # still reported

    assert recipe["consensus_inverse"] == "per_modality"  # the default (README "Reproduction")
    unscaled = dict(recipe, consensus_inverse="unscaled")
    total, _ = recipe_loss(unscaled, outputs, step=recipe["align_steps"])
    expected = ref.consensus({m: own(outputs, m) for m in MODALITIES}, "audio", {"video": 0.5, "text": 1.0}, "unscaled")
    assert total.item() == pytest.approx(contrastive + expected, rel=1e-10)


def test_mc3_vq_total():
    recipe, outputs = load_recipe("mc3_vq"), make_outputs(3)
    probs = outputs["code_probs"]
    contrastive = _contrastive_reference(outputs, 0.07)
    consensus = ref.consensus({m: own(outputs, m) for m in MODALITIES}, "audio", {"video": 0.5, "text": 1.0}, recipe["consensus_inverse"])
    cmcm = sum((ref.cmcm(probs[a], probs[b]) + ref.cmcm(probs[b], probs[a]))
               for a, b in combinations(MODALITIES, 2))
    commitment = outputs["commitment_loss"].item()
    total, terms = recipe_loss(recipe, outputs, step=10**6)
    assert total.item() == pytest.approx(contrastive + consensus + 0.1 * cmcm + commitment, rel=1e-10)
    assert terms["loss_cmcm"] == pytest.approx(cmcm, rel=1e-10)
    total, _ = recipe_loss(recipe, outputs, step=0)  # align: CMCM and commitment still train
    assert total.item() == pytest.approx(contrastive + 0.1 * cmcm + commitment, rel=1e-10)


def test_mcn_total():
    recipe, outputs = load_recipe("mcn"), make_outputs(4)
    kmeans = OnlineKMeans(num_clusters=3, dim=4, queue_batches=2, refit_every=1, iters=20, seed=0)
    total, terms = recipe_loss(recipe, outputs, step=0, kmeans=kmeans)
    fused = sum(own(outputs, m) for m in MODALITIES).detach() / 3  # eq. 4
    targets = kmeans.assign(fused)
    mms = sum(ref.mms(own(outputs, a) @ own(outputs, b).t(), 0.001) for a, b in combinations(MODALITIES, 2))
    cluster = sum(ref.cluster(own(outputs, m), kmeans.centroids, targets, 0.001) for m in MODALITIES) / 3
    reconstruct = sum(ref.mse(*outputs["reconstruction"][m]) for m in MODALITIES)
    assert terms["loss_mms"] == pytest.approx(mms, rel=1e-10)
    assert terms["loss_cluster"] == pytest.approx(cluster, rel=1e-10)
    assert terms["loss_reconstruct"] == pytest.approx(reconstruct, rel=1e-10)
    assert total.item() == pytest.approx(mms + cluster + 50.0 * reconstruct, rel=1e-10)


def test_mcn_cluster_term_is_zero_until_kmeans_is_ready():
    recipe, outputs = load_recipe("mcn"), make_outputs(5)
    kmeans = OnlineKMeans(num_clusters=100, dim=4, queue_batches=2, refit_every=1, iters=5, seed=0)
    total, terms = recipe_loss(recipe, outputs, step=0, kmeans=kmeans)
    assert terms["loss_cluster"] == 0.0
    total.backward()


@pytest.mark.parametrize("seed", [0, 1])
def test_mmv_total(seed):
    recipe, outputs = load_recipe("mmv"), make_outputs(seed)
    fac, mask = outputs["fac"], outputs["text_candidate_mask"]
    nce = ref.mil_nce(fac["video_va"], fac["audio_va"].unsqueeze(1), 0.07)
    milnce = ref.mil_nce(fac["video_vat"], fac["text_vat"], 0.07, mask)
    total, terms = recipe_loss(recipe, outputs, step=0)
    assert terms["loss_nce_va"] == pytest.approx(nce, rel=1e-10)
    assert terms["loss_milnce_vt"] == pytest.approx(milnce, rel=1e-10)
    assert total.item() == pytest.approx(1.0 * nce + 10.0 * milnce, rel=1e-10)


# ---------------------------------------------------------------- missing modalities (MMV Sec. 3.1)


def _perturb_missing(outputs, name, missing):
    """A copy of outputs where modality `name` of the `missing` clips holds different numbers."""
    changed = {**outputs, "embeddings": dict(outputs["embeddings"]), "fac": dict(outputs["fac"]),
               "code_probs": dict(outputs["code_probs"])}
    e = outputs["embeddings"][name].detach().clone()
    e[missing] = 100 + e[missing]
    changed["embeddings"][name] = e
    if name == "text":
        t = outputs["fac"]["text_vat"].detach().clone()
        t[missing] = -t[missing]
        changed["fac"]["text_vat"] = t
    if name == "audio":
        a = outputs["fac"]["audio_va"].detach().clone()
        a[missing] = -a[missing]
        changed["fac"]["audio_va"] = a
    p = outputs["code_probs"][name].detach().clone()
    p[missing] = p[missing].flip(1)
    changed["code_probs"][name] = p
    return changed


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("missing_modality", ["audio", "text"])
def test_missing_clips_are_excluded_from_rows_and_columns(name, missing_modality):
    recipe = load_recipe(name)
    if missing_modality not in recipe["modalities"]:
        pytest.skip(f"{name} does not use {missing_modality}")
    outputs = make_outputs(7)
    missing = torch.tensor([1, 4])
    outputs["present"][missing_modality][missing] = False
    kmeans = lambda: OnlineKMeans(num_clusters=3, dim=4, queue_batches=2, refit_every=1, iters=20, seed=0)  # noqa: E731
    total, terms = recipe_loss(recipe, outputs, step=10**6, kmeans=kmeans())
    assert torch.isfinite(total)
    changed = _perturb_missing(outputs, missing_modality, missing)
    total_changed, _ = recipe_loss(recipe, changed, step=10**6, kmeans=kmeans())
    assert total_changed.item() == pytest.approx(total.item(), rel=1e-12)


def test_mc3_missing_audio_reweights_over_valid_clips():
    recipe, outputs = load_recipe("mc3"), make_outputs(8)
    outputs["present"]["audio"][torch.tensor([0, 3])] = False
    valid = torch.tensor([1, 2, 4, 5])
    expected = ref.info_nce(own(outputs, "video"), own(outputs, "text"), 0.07) + \
        ref.info_nce(own(outputs, "text"), own(outputs, "video"), 0.07)
    for a, b in permutations(MODALITIES, 2):
        if "audio" in (a, b):  # mean over the 4 valid clips: the term keeps weight 1
            expected += ref.info_nce(own(outputs, a, valid), own(outputs, b, valid), 0.07)
    consensus = ref.consensus({m: own(outputs, m, valid) for m in MODALITIES}, "audio", {"video": 0.5, "text": 1.0}, recipe["consensus_inverse"])
    total, _ = recipe_loss(recipe, outputs, step=10**6)
    assert total.item() == pytest.approx(expected + consensus, rel=1e-10)


def test_mmv_text_with_only_padded_candidates_counts_as_missing():
    recipe, outputs = load_recipe("mmv"), make_outputs(9)
    outputs["text_candidate_mask"][2] = False
    fac, mask = outputs["fac"], outputs["text_candidate_mask"]
    valid = torch.tensor([0, 1, 3, 4, 5])
    milnce = ref.mil_nce(fac["video_vat"][valid], fac["text_vat"][valid], 0.07, mask[valid])
    _, terms = recipe_loss(recipe, outputs, step=0)
    assert terms["loss_milnce_vt"] == pytest.approx(milnce, rel=1e-10)


@pytest.mark.parametrize("name", RECIPES)
def test_term_without_valid_clip_is_zero_not_nan(name):
    recipe, outputs = load_recipe(name), make_outputs(10)
    outputs["present"]["audio"][:] = False
    kmeans = OnlineKMeans(num_clusters=3, dim=4, queue_batches=2, refit_every=1, iters=20, seed=0)
    total, terms = recipe_loss(recipe, outputs, step=10**6, kmeans=kmeans)
    assert torch.isfinite(total)
    if name == "mmv":
        assert terms["loss_nce_va"] == 0.0
    total.backward()
    audio = outputs["fac"]["audio_va"] if name == "mmv" else outputs["embeddings"]["audio"]
    assert torch.all(audio.grad == 0)
    video = outputs["fac"]["video_vat"] if name == "mmv" else outputs["embeddings"]["video"]
    assert torch.isfinite(video.grad).all()
    if "text" in recipe["modalities"]:  # the video-text terms still train
        assert video.grad.abs().sum() > 0


def test_everything_missing_still_backpropagates():
    recipe, outputs = load_recipe("mc3"), make_outputs(11)
    for m in MODALITIES:
        outputs["present"][m][:] = False
    total, terms = recipe_loss(recipe, outputs, step=10**6)
    assert total.item() == 0.0 and terms["loss_info_nce"] == 0.0
    total.backward()
    assert torch.all(outputs["embeddings"]["video"].grad == 0)


def test_cmcm_without_codebook_is_the_mms_baseline():
    """CMCM Table 3 row (f): the cmcm recipe on a model without codebook trains MMS alone at alpha 0,
    and names the key when alpha asks for code matching."""
    recipe, outputs = load_recipe("cmcm"), make_outputs(0)
    for key in ("code_probs", "code_indices", "code_mask", "commitment_loss"):
        outputs.pop(key, None)
    with pytest.raises(ValueError, match="model.codebook.enabled"):
        recipe_loss(recipe, outputs, step=0)
    recipe["cmcm_alpha"] = 0.0
    total, terms = recipe_loss(recipe, outputs, step=0)
    v, a = (own(outputs, m) for m in ("video", "audio"))
    assert total.item() == pytest.approx(ref.mms(v @ a.t(), recipe["mms_margin"]), rel=1e-10)
    assert set(terms) == {"loss_mms"}
