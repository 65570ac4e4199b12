"""MC3 consensus, eqs. 2-3: hand-worked scores, loops, the equal-similarity property, detached c."""

import math

import pytest
import torch
import torch.nn.functional as F

import loop_reference as ref
from mmdist.objectives import consensus_loss, consensus_scores, consensus_targets

ALPHAS = {"video": 0.5, "text": 1.0}


def test_consensus_scores_hand_worked():
    sims = {"video": torch.tensor([0.0, 0.6]), "text": torch.tensor([0.2, -0.2])}
    # sample 0: K_v(0) = 0.5^0.5 = 0.707, K_t(0.2) = 0.6 -> min 0.6 -> c = 2 * 0.6 - 1 = 0.2
    # sample 1: K_v(0.6) = 0.8^0.5 = 0.894, K_t(-0.2) = 0.4 -> min 0.4 -> c = -0.2
    torch.testing.assert_close(consensus_scores(sims, ALPHAS), torch.tensor([0.2, -0.2]))
    # with video the bottleneck: K_v(-0.9) = 0.05^0.5 = 0.2236 < K_t(0.5) = 0.75
    c = consensus_scores({"video": torch.tensor([-0.9]), "text": torch.tensor([0.5])}, ALPHAS)
    assert c.item() == pytest.approx(2 * math.sqrt(0.05) - 1, rel=1e-6)


def test_consensus_scores_finite_at_the_ends_of_the_range():
    sims = {"video": torch.tensor([-1.0000001, 1.0000001]), "text": torch.tensor([0.0, 1.0])}
    assert torch.isfinite(consensus_scores(sims, ALPHAS)).all()


def test_consensus_scores_names_missing_alpha():
    with pytest.raises(ValueError, match="'audio'"):
        consensus_scores({"audio": torch.zeros(2)}, ALPHAS)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("anchor", ["audio", "video"])
def test_consensus_loss_matches_loops(seed, anchor):
    g = torch.Generator().manual_seed(seed)
    embeddings = {m: torch.randn(6, 5, generator=g, dtype=torch.float64) for m in ("video", "audio", "text")}
    alphas = {"video": 0.5, "audio": 0.7, "text": 1.0}
    got = consensus_loss(embeddings, anchor, {m: a for m, a in alphas.items() if m != anchor}, "unscaled")
    assert got.item() == pytest.approx(ref.consensus(embeddings, anchor, alphas), rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_consensus_loss_is_zero_when_pair_similarities_agree_and_alpha_is_one(seed):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(8, 4, generator=g, dtype=torch.float64)
    video = torch.randn(8, 4, generator=g, dtype=torch.float64)
    # text is video reflected about the audio direction: same cosine with audio, different vector
    a = F.normalize(audio, dim=1)
    v = F.normalize(video, dim=1)
    text = 2 * (v * a).sum(1, keepdim=True) * a - v
    embeddings = {"video": video, "audio": audio, "text": 3 * text}
    ones = {"video": 1.0, "text": 1.0}
    assert consensus_loss(embeddings, "audio", ones, "unscaled").item() == pytest.approx(0.0, abs=1e-12)
    # alpha != 1 moves the target off the shared similarity (x^2 < x on (0, 1))
    assert consensus_loss(embeddings, "audio", {"video": 2.0, "text": 1.0}, "unscaled").item() > 1e-3


def test_consensus_target_is_detached():
    g = torch.Generator().manual_seed(4)
    inputs = {m: torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True) for m in ("video", "audio", "text")}
    consensus_loss(inputs, "audio", ALPHAS, "unscaled").backward()
    got = {m: x.grad.clone() for m, x in inputs.items()}

    # reference: d/de of mean_t sum_i |s_i - c| with c a constant
    leaves = {m: x.detach().clone().requires_grad_() for m, x in inputs.items()}
    anchor = F.normalize(leaves["audio"], dim=1)
    sims = {m: (F.normalize(leaves[m], dim=1) * anchor).sum(1) for m in ("video", "text")}
    with torch.no_grad():
        # alpha_text = 1: K^-1(K_text(s)) = s exactly, so the bottleneck pair's gap is exactly 0
        # (subgradient 0); 2 * ((s + 1) / 2) - 1 would leave rounding noise whose sign picks +-1
        c = torch.minimum(2 * ((sims["video"] + 1) / 2) ** 0.5 - 1, sims["text"])
    ((sims["video"] - c).abs() + (sims["text"] - c).abs()).mean().backward()
    for m in inputs:
        torch.testing.assert_close(got[m], leaves[m].grad)

    # and it differs from the gradient with c attached (the test can tell the two apart)
    attached = {m: x.detach().clone().requires_grad_() for m, x in inputs.items()}
    anchor = F.normalize(attached["audio"], dim=1)
    sims = {m: (F.normalize(attached[m], dim=1) * anchor).sum(1) for m in ("video", "text")}
    c = consensus_scores(sims, ALPHAS)
    ((sims["video"] - c).abs() + (sims["text"] - c).abs()).mean().backward()
    assert not all(torch.allclose(attached[m].grad, got[m]) for m in inputs)


def test_per_modality_targets_hand_worked():
    # video the bottleneck: K_v(-0.9) = 0.05^0.5 = 0.2236 < K_t(0.5) = 0.75
    sims = {"video": torch.tensor([-0.9], dtype=torch.float64), "text": torch.tensor([0.5], dtype=torch.float64)}
    targets = consensus_targets(sims, ALPHAS, "per_modality")
    assert targets["video"].item() == -0.9  # the bottleneck pair's target is itself
    # text (alpha 1) is compared in its own scale: 2 * 0.2236 - 1
    assert targets["text"].item() == pytest.approx(2 * math.sqrt(0.05) - 1, rel=1e-12)
    # the unscaled reading pulls the bottleneck video pair UP to c = 2 * 0.2236 - 1 = -0.553
    unscaled = consensus_targets(sims, ALPHAS, "unscaled")
    assert unscaled["video"].item() == pytest.approx(2 * math.sqrt(0.05) - 1, rel=1e-12)
    assert unscaled["video"].item() > -0.9
    # text the bottleneck: K_t(-0.5) = 0.25 < K_v(0.6) = 0.894 -> video's target 2 * 0.25^2 - 1 = -0.875
    sims = {"video": torch.tensor([0.6], dtype=torch.float64), "text": torch.tensor([-0.5], dtype=torch.float64)}
    targets = consensus_targets(sims, ALPHAS, "per_modality")
    assert targets["text"].item() == -0.5
    assert targets["video"].item() == pytest.approx(2 * 0.25**2 - 1, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_modality_consensus_loss_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    embeddings = {m: torch.randn(6, 5, generator=g, dtype=torch.float64) for m in ("video", "audio", "text")}
    got = consensus_loss(embeddings, "audio", ALPHAS, inverse="per_modality")
    assert got.item() == pytest.approx(ref.consensus(embeddings, "audio", ALPHAS, "per_modality"), rel=1e-10)
    assert got.item() != pytest.approx(ref.consensus(embeddings, "audio", ALPHAS, "unscaled"), rel=1e-6)


def test_unknown_inverse_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        consensus_targets({"video": torch.zeros(2)}, ALPHAS, "nope")
