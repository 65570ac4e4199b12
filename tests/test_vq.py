"""The shared VQ codebook (SPEC Sec. 4): assignment, straight-through, EMA (Appendix A eqs. 9-10),
dead-code resets, usage statistics, precision, and the modality-wise batch norm.
Distributed sync is tested in tests/test_dist.py."""

import math

import pytest
import torch

from mmdist.vq import ModalityBatchNorm, VectorQuantizer, perplexity, squared_distances




def _set_codebook(vq: VectorQuantizer, codes: torch.Tensor, counts: torch.Tensor | None = None) -> None:
    counts = torch.ones(len(codes), dtype=codes.dtype) if counts is None else counts
    vq.embed.copy_(codes)
    vq.ema_count.copy_(counts)
    vq.ema_sum.copy_(codes * counts.unsqueeze(1))


def test_init_follows_eq_9_and_the_seed():
    vq = VectorQuantizer(16, 4, seed=3)
    expected = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(vq.codebook, expected)
    torch.testing.assert_close(vq.ema_sum, expected)  # m ~ N(0, 1), e = m
    assert torch.all(vq.ema_count == 1)  # N = 1
    assert torch.equal(VectorQuantizer(16, 4, seed=3).codebook, vq.codebook)
    assert not torch.equal(VectorQuantizer(16, 4, seed=4).codebook, vq.codebook)
    assert not vq.codebook.requires_grad and "embed" in dict(vq.named_buffers())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_codeword_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    vq = VectorQuantizer(7, 5, seed=seed).double().eval()
    codes = vq.codebook
    distances = squared_distances(x, codes)
    for i in range(20):
        by_loop = [sum((float(x[i, d]) - float(codes[v, d])) ** 2 for d in range(5)) for v in range(7)]
        assert distances[i].tolist() == pytest.approx(by_loop, rel=1e-10, abs=1e-12)
        assert int(vq(x).indices[i]) == min(range(7), key=lambda v: by_loop[v])


def test_straight_through_output_and_gradient():
    g = torch.Generator().manual_seed(0)
    vq = VectorQuantizer(8, 3, seed=0).eval()
    x = torch.randn(10, 3, generator=g, requires_grad=True)
    result = vq(x)
    torch.testing.assert_close(result.quantized, vq.codebook[result.indices])
    (result.quantized * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(3.0).expand(10, 3))  # identity backward (eq. 2)


def test_commitment_term_value_and_gradient():
    g = torch.Generator().manual_seed(1)
    vq = VectorQuantizer(6, 4, commitment=0.25, seed=1).double().eval()
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    result = vq(x)
    e = vq.codebook[result.indices]
    xs, es = x.detach().tolist(), e.tolist()
    expected = 0.25 * sum((xs[i][d] - es[i][d]) ** 2 for i in range(5) for d in range(4)) / 20
    assert result.commitment_loss.item() == pytest.approx(expected, rel=1e-12)
    result.commitment_loss.backward()
    torch.testing.assert_close(x.grad, 0.25 * 2 * (x - e).detach() / 20)
    silent = VectorQuantizer(6, 4, commitment=0.0, seed=1).double().eval()
    assert silent(x).commitment_loss.item() == 0.0


def test_ema_update_matches_eq_10_by_hand():
    vq = VectorQuantizer(3, 2, decay=0.9, seed=0).double()
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    _set_codebook(vq, codes, counts=torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64))
    x = torch.tensor([[1.0, 1.0], [-1.0, 3.0], [9.0, 1.0]], dtype=torch.float64)  # codes 0, 0, 1
    result = vq(x)
    assert result.indices.tolist() == [0, 0, 1]
    # N <- g N + (1 - g) |H|,  m <- g m + (1 - g) sum H,  e = m / N
    n = [0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 4 + 0.1 * 0]
    m = [[0.9 * 0 + 0.1 * 0, 0.9 * 0 + 0.1 * 4], [0.9 * 10 + 0.1 * 9, 0.9 * 0 + 0.1 * 1], [0.0, 0.9 * 40]]
    assert vq.ema_count.tolist() == pytest.approx(n)
    assert vq.ema_sum.flatten().tolist() == pytest.approx([v for row in m for v in row])
    expected = [[m[v][d] / n[v] for d in range(2)] for v in range(3)]
    assert vq.codebook.flatten().tolist() == pytest.approx([v for row in expected for v in row])
    torch.testing.assert_close(result.quantized, codes[[0, 0, 1]])  # pre-update codewords
    assert vq.idle_updates.tolist() == [0, 0, 1]


def test_eval_mode_does_not_update():
    vq = VectorQuantizer(4, 2, seed=0).eval()
    before = vq.codebook.clone()
    vq(torch.randn(8, 2))
    assert torch.equal(vq.codebook, before) and int(vq.num_updates) == 0


def test_dead_codes_reset_after_dead_after_idle_updates_from_an_activated_codeword():
    vq = VectorQuantizer(4, 2, dead_after=3, reset_noise=1e-3, seed=0).double()
    codes = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [-50.0, 0.0]], dtype=torch.float64)
    _set_codebook(vq, codes)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        vq(0.1 * torch.randn(16, 2, generator=g, dtype=torch.float64))  # all rows use code 0
    assert int(vq.num_resets) == 0 and vq.idle_updates.tolist() == [0, 2, 2, 2]
    vq(0.1 * torch.randn(16, 2, generator=g, dtype=torch.float64))  # third idle update: reset
    assert vq.usage()["resets"] == 3 and vq.usage()["resets_last_update"] == 3
    source = vq.codebook[0]
    for v in (1, 2, 3):  # copies of the only activated codeword, plus small noise so they can split
        gap = (vq.codebook[v] - source).norm().item()
        assert 0 < gap < 0.01
        assert vq.ema_count[v].item() == 1.0
        torch.testing.assert_close(vq.ema_sum[v], vq.codebook[v])
    assert vq.idle_updates.tolist() == [0, 0, 0, 0]


def test_usage_grows_after_resets_on_inputs_that_use_few_codes():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(4, 8, generator=g)
    vq = VectorQuantizer(32, 8, dead_after=5, reset_noise=0.05, seed=0)
    _set_codebook(vq, 10 + torch.randn(32, 8, generator=g))  # far from the data: few codes win
    history = []
    for _ in range(80):
        x = centres[torch.randint(4, (256,), generator=g)] + torch.randn(256, 8, generator=g)
        vq(x)
        history.append(vq.usage())
    assert history[0]["active_codes"] <= 4
    assert history[-1]["resets"] > 0
    assert history[-1]["active_codes"] >= 3 * history[0]["active_codes"]
    assert history[-1]["perplexity"] > 2 * history[0]["perplexity"]


def test_perplexity_and_per_modality_counts():
    vq = VectorQuantizer(4, 2, modalities=("video", "audio"), seed=0).double()
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]], dtype=torch.float64)
    _set_codebook(vq, codes)
    x = codes[[0, 0, 1, 1, 1, 2]]
    ids = torch.tensor([0, 1, 0, 0, 1, 1])
    vq(x, modality_ids=ids)
    usage = vq.usage()
    p = [2 / 6, 3 / 6, 1 / 6]
    assert usage["perplexity"] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    assert usage["active_codes"] == 3
    assert usage["counts"]["video"].tolist() == [1, 2, 0, 0]
    assert usage["counts"]["audio"].tolist() == [1, 1, 1, 0]
    assert usage["active_codes_video"] == 2 and usage["active_codes_audio"] == 3
    assert perplexity(torch.tensor([5.0, 5.0, 0.0])) == pytest.approx(2.0)


def test_bf16_autocast_quantises_in_fp32():
    # unit-scale rows (as after the batch norm) with codewords 0.01 apart: bf16's 8-bit
    # mantissa (spacing 0.0078 at 1.0) cannot tell them apart, fp32 can
    base = torch.ones(1, 4)
    codes = base + 0.01 * torch.arange(8.0).unsqueeze(1)
    x = base + 0.01 * torch.tensor([[0.1], [2.9], [6.8], [5.2], [3.4]])
    vq = VectorQuantizer(8, 4, seed=0).eval()
    _set_codebook(vq, codes)
    expected = [0, 3, 7, 5, 3]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = vq(x)
        bf16_indices = (x.bfloat16() @ codes.bfloat16().t() * -2 + codes.bfloat16().pow(2).sum(1)).argmin(1)
    assert result.indices.tolist() == expected
    assert result.quantized.dtype == torch.float32
    assert bf16_indices.tolist() != expected  # the check could fail: bf16 loses codes


def test_module_dtype_casts_keep_the_codebook_at_least_fp32():
    vq = VectorQuantizer(8, 4, seed=0).bfloat16()
    assert vq.codebook.dtype == torch.float32 and vq.ema_count.dtype == torch.float32
    result = vq(torch.randn(5, 4).bfloat16())
    assert result.quantized.dtype == torch.bfloat16 and vq.codebook.dtype == torch.float32
    assert VectorQuantizer(8, 4, seed=0).double().codebook.dtype == torch.float64


def test_state_dict_round_trip_continues_identically():
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(32, 4, generator=g) for _ in range(12)]
    a = VectorQuantizer(16, 4, dead_after=2, seed=5)
    for x in data[:6]:
        a(x)
    b = VectorQuantizer(16, 4, dead_after=2, seed=5)
    b.load_state_dict(a.state_dict())
    for x in data[6:]:
        a(x)
        b(x)
    assert int(a.num_resets) > 0
    assert torch.equal(a.codebook, b.codebook)


def test_bad_inputs_are_named():
    vq = VectorQuantizer(4, 3, modalities=("video", "audio"))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        vq(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="modality_ids"):
        vq(torch.zeros(2, 3), modality_ids=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(4, 3, decay=1.0)


def test_empty_batch_is_harmless():
    vq = VectorQuantizer(4, 3, seed=0)
    result = vq(torch.zeros(0, 3, requires_grad=True))
    assert result.indices.shape == (0,) and result.commitment_loss.item() == 0.0
    assert torch.isfinite(vq.codebook).all()


def test_modality_batch_norm_normalises_each_modality_separately():
    g = torch.Generator().manual_seed(0)
    norm = ModalityBatchNorm(3, ("video", "audio", "text"), eps=1e-5, momentum=0.1).double()
    ids = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    x = torch.randn(8, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)
    x[ids == 1] += 100  # a different location per modality
    x.requires_grad_()
    out = norm(x, ids)
    for m in (0, 1):
        rows = x[ids == m].detach()
        expected = (rows - rows.mean(0)) / torch.sqrt(rows.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(out[ids == m], expected, rtol=1e-10, atol=1e-10)
    out[:, 0].sum().backward()
    assert x.grad is not None
    assert norm.norms["text"].num_batches_tracked.item() == 0  # no text rows, untouched
    with pytest.raises(ValueError, match="modality_ids"):
        norm(x, torch.tensor([0, 1, 0, 1, 0, 1, 1, 3]))


def test_deferred_updates_equal_one_update_on_the_concatenated_batch():
    """Gradient accumulation: two micro-batches summed into one EMA step (issue 9, deviation 8) equal
    one ordinary update on both micro-batches together; nothing moves before `apply_pending_update`."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 3, (40,), generator=g)
    whole = VectorQuantizer(16, 4, dead_after=1, seed=2).double()  # dead_after 1: resets happen too
    whole(x, ids)
    deferred = VectorQuantizer(16, 4, dead_after=1, seed=2).double()
    deferred.defer_updates = True
    before = deferred.codebook.clone()
    first, second = deferred(x[:20], ids[:20]), deferred(x[20:], ids[20:])
    torch.testing.assert_close(deferred.codebook, before, rtol=0, atol=0)  # the codebook waits for the step
    assert int(deferred.num_updates) == 0
    # both micro-batches were quantised against the same (pre-step) codebook
    fresh = VectorQuantizer(16, 4, dead_after=1, seed=2).double().eval()
    assert torch.equal(torch.cat([first.indices, second.indices]), fresh(x, ids).indices)
    assert deferred.apply_pending_update()
    assert not deferred.apply_pending_update()  # one update per step
    for name in ("embed", "ema_sum", "ema_count", "idle_updates", "num_updates", "last_counts", "num_resets"):
        torch.testing.assert_close(getattr(deferred, name), getattr(whole, name), rtol=1e-12, atol=1e-12)


def test_discarded_statistics_change_nothing():
    vq = VectorQuantizer(8, 3, seed=0).double()
    vq.defer_updates = True
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(10, 3, dtype=torch.float64))
    vq.discard_pending_update()
    assert not vq.apply_pending_update()
    for name, value in vq.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_uncounted_rows_are_quantised_but_stay_out_of_the_ema():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    counted = torch.arange(30) % 3 == 0
    masked = VectorQuantizer(12, 4, seed=1).double()
    result = masked(x, counted=counted)
    reference = VectorQuantizer(12, 4, seed=1).double()
    reference(x[counted])  # the EMA of the counted rows alone
    for name in ("embed", "ema_sum", "ema_count", "last_counts"):
        torch.testing.assert_close(getattr(masked, name), getattr(reference, name), rtol=1e-12, atol=1e-12)
    # every row is quantised, and the commitment term is a mean over all of them
    fresh = VectorQuantizer(12, 4, seed=1).double().eval()
    assert torch.equal(result.indices, fresh(x).indices)
    torch.testing.assert_close(result.commitment_loss, fresh(x).commitment_loss)
