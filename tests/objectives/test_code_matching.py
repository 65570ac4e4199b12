"""CMCM eqs. 4-7 against loops and a hand-worked case; symmetry; no [B, B, V] intermediate."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import loop_reference as ref
from mmdist.objectives import cmcm_loss, code_distribution, code_similarity, with_code_probs

SEEDS = [0, 1, 2]


def _random_probs(g, batch, codes):
    return torch.softmax(3 * torch.randn(batch, codes, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("seed", SEEDS)
def test_code_distribution_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    codebook = torch.randn(6, 5, generator=g, dtype=torch.float64)
    expected = torch.tensor(ref.code_distribution(features, codebook), dtype=torch.float64)
    torch.testing.assert_close(code_distribution(features, codebook), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_code_distribution_mask_averages_valid_positions_only(seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    codebook = torch.randn(6, 5, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    got = code_distribution(features, codebook, mask)
    expected = torch.tensor(ref.code_distribution(features, codebook, mask), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[:2].sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert torch.all(got[2] == 0)  # no valid position -> all-zero row


def test_code_distribution_uses_distance_not_squared_distance():
    # one position at the origin, codewords at distance 1 and 2: softmin(1, 2) = (e^-1, e^-2) / Z
    features = torch.zeros(1, 1, 2, dtype=torch.float64)
    codebook = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    z = math.exp(-1) + math.exp(-2)
    expected = torch.tensor([[math.exp(-1) / z, math.exp(-2) / z]], dtype=torch.float64)
    torch.testing.assert_close(code_distribution(features, codebook), expected)


def test_code_distribution_gradient_reaches_features_not_codebook():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, generator=g, requires_grad=True)
    codebook = torch.randn(5, 4, generator=g, requires_grad=True)
    code_distribution(features, codebook)[:, 0].sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert codebook.grad is None


def test_code_distribution_stays_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 8, generator=g)
    codebook = torch.randn(16, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = code_distribution(features, codebook)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, code_distribution(features, codebook))


@pytest.mark.parametrize("seed", SEEDS)
def test_code_similarity_matches_loops_and_is_symmetric(seed):
    g = torch.Generator().manual_seed(seed)
    p_a, p_b = _random_probs(g, 4, 6), _random_probs(g, 4, 6)
    p_b[0, 2] = 0.0  # exercised by the 1e-8 floor
    s_ab = code_similarity(p_a, p_b)
    torch.testing.assert_close(s_ab, torch.tensor(ref.code_similarity(p_a, p_b), dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_ab, code_similarity(p_b, p_a).t(), rtol=1e-12, atol=1e-12)


def test_code_similarity_hand_worked_2x2():
    p_a = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    p_b = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    ln = math.log
    expected = torch.tensor([
        [0.5 * ln(0.5) * 2 + 0.5 * ln(0.5) * 2,
         0.5 * ln(0.1) + 0.5 * ln(0.9) + 0.1 * ln(0.5) + 0.9 * ln(0.5)],
        [0.9 * ln(0.5) + 0.1 * ln(0.5) + 0.5 * ln(0.9) + 0.5 * ln(0.1),
         0.9 * ln(0.1) + 0.1 * ln(0.9) + 0.1 * ln(0.9) + 0.9 * ln(0.1)],
    ], dtype=torch.float64)
    torch.testing.assert_close(code_similarity(p_a, p_b), expected)
    # eq. 7 on it: row i's cross-entropy with the diagonal as target
    s = expected
    loss = -0.5 * sum(s[i, i] - math.log(math.exp(s[i, 0]) + math.exp(s[i, 1])) for i in range(2))
    assert cmcm_loss(p_a, p_b).item() == pytest.approx(float(loss), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_cmcm_loss_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    p_a, p_b = _random_probs(g, 5, 7), _random_probs(g, 5, 7)
    assert cmcm_loss(p_a, p_b).item() == pytest.approx(ref.cmcm(p_a, p_b), rel=1e-10)
    assert cmcm_loss(p_a, p_b).item() != pytest.approx(cmcm_loss(p_b, p_a).item(), rel=1e-6)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_code_similarity_never_builds_a_b_by_b_by_v_tensor():
    batch, codes = 32, 64
    g = torch.Generator().manual_seed(0)
    p_a = _random_probs(g, batch, codes).requires_grad_()
    p_b = _random_probs(g, batch, codes)
    with _LargestTensor() as probe:
        cmcm_loss(p_a, p_b).backward()
    assert probe.largest <= max(batch * batch, batch * codes)
    assert probe.largest < batch * batch * codes


def test_with_code_probs_is_code_distribution_per_modality():
    """The model's code outputs -> eqs. 4-5 per modality with its mask, bit for bit; the features and
    the codebook are dropped (the gather must not see them), every other output is kept as it is."""
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(6, 5, generator=g, dtype=torch.float64)
    features = {"video": torch.randn(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True),
                "text": torch.randn(3, 2, 5, generator=g, dtype=torch.float64)}
    masks = {"video": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool),
             "text": torch.ones(3, 2, dtype=torch.bool)}
    outputs = {"code_features": features, "codebook": codebook, "code_mask": masks, "present": {"video": True}}
    out = with_code_probs(outputs)
    assert set(out) == {"code_probs", "code_mask", "present"} and out["code_mask"] is masks
    for m in features:
        assert torch.equal(out["code_probs"][m], code_distribution(features[m], codebook, masks[m]))
    out["code_probs"]["video"].sum().backward()
    assert features["video"].grad is not None
    assert with_code_probs({"present": {}}) == {"present": {}}
