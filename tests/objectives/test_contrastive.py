"""MMS, InfoNCE and MIL-NCE against the loop references (float64, several seeds) and their properties."""

import pytest
import torch
import torch.nn.functional as F

import loop_reference as ref
from mmdist.objectives import info_nce, mil_nce, mms_loss

SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_mms_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(5, 5, generator=g, dtype=torch.float64) * 3
    for margin in (1e-3, 0.5):
        assert mms_loss(sim, margin=margin).item() == pytest.approx(ref.mms(sim, margin), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_mms_with_zero_margin_is_bidirectional_cross_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(6, 6, generator=g, dtype=torch.float64)
    # cross-entropy written out: -log softmax of the diagonal, over rows then over columns
    rows = -(sim.diagonal() - torch.logsumexp(sim, dim=1)).mean()
    cols = -(sim.diagonal() - torch.logsumexp(sim, dim=0)).mean()
    assert mms_loss(sim, margin=0.0).item() == pytest.approx((rows + cols).item(), rel=1e-12)


def test_mms_margin_raises_the_loss():
    sim = torch.eye(4, dtype=torch.float64) * 2
    assert mms_loss(sim, margin=0.1) > mms_loss(sim, margin=0.0)


def test_mms_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        mms_loss(torch.zeros(3, 4), margin=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_info_nce_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(5, 7, generator=g, dtype=torch.float64)
    k = torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert info_nce(q, k, 0.07).item() == pytest.approx(ref.info_nce(q, k, 0.07), rel=1e-10)
    assert info_nce(q, k, 1.0).item() == pytest.approx(ref.info_nce(q, k, 1.0), rel=1e-12)


def test_info_nce_is_scale_invariant_and_directional():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(4, 3, generator=g, dtype=torch.float64)
    k = torch.randn(4, 3, generator=g, dtype=torch.float64)
    assert info_nce(5 * q, 0.1 * k, 0.5).item() == pytest.approx(info_nce(q, k, 0.5).item(), rel=1e-12)
    assert info_nce(q, k, 0.5).item() != pytest.approx(info_nce(k, q, 0.5).item(), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_mil_nce_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(4, 6, generator=g, dtype=torch.float64)
    text = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    assert mil_nce(video, text, 0.1).item() == pytest.approx(ref.mil_nce(video, text, 0.1), rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
def test_mil_nce_masked_candidates_match_loops_and_are_ignored(seed):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(5, 4, generator=g, dtype=torch.float64)
    text = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    loss = mil_nce(video, text, 0.2, text_mask=mask)
    assert loss.item() == pytest.approx(ref.mil_nce(video, text, 0.2, mask), rel=1e-10)
    garbage = text.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), 4, generator=g, dtype=torch.float64)
    assert mil_nce(video, garbage, 0.2, text_mask=mask).item() == pytest.approx(loss.item(), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_mil_nce_with_one_candidate_is_the_single_positive_reference(seed):
    # Miech et al.'s MILNCELoss with one candidate per clip: the positive against
    # v_i vs every text and every video vs t_i (the positive appears in both halves).
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(6, 5, generator=g, dtype=torch.float64)
    text = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = F.normalize(video, dim=1) @ F.normalize(text, dim=1).t() / 0.07  # [B, B]
    single = (torch.logsumexp(torch.cat([x, x.t()], dim=1), dim=1) - x.diagonal()).mean()
    assert mil_nce(video, text.unsqueeze(1), 0.07).item() == pytest.approx(single.item(), rel=1e-12)


def test_mil_nce_rejects_clip_without_candidates():
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        mil_nce(torch.randn(2, 3), torch.randn(2, 2, 3), 0.07, text_mask=mask)
