"""Smoke run of the `objectives` benchmark suite at tiny sizes (figures are not asserted: not a timed test)."""

import pytest
import torch

from mmdist.benchmarks.objectives import naive_code_similarity, run
from mmdist.objectives import code_similarity

TINY = {"batch_sizes": [8, 16], "num_codes": 32, "vq_rows": 64, "vq_dim": 8, "repeats": 1, "threads": 1, "seed": 0}


def test_naive_form_agrees_with_matmul_form():
    g = torch.Generator().manual_seed(0)
    p_a = torch.softmax(torch.randn(6, 10, generator=g, dtype=torch.float64), dim=1)
    p_b = torch.softmax(torch.randn(6, 10, generator=g, dtype=torch.float64), dim=1)
    torch.testing.assert_close(naive_code_similarity(p_a, p_b), code_similarity(p_a, p_b))


def test_run_reports_every_figure(capsys):
    results = run(TINY)
    for label in ("code_similarity/B8_V32", "code_similarity/B16_V32", "vq_assign/N64_V32_D8"):
        for figure in ("fast_s", "slow_s", "speedup", "fast_peak_mib", "slow_peak_mib", "memory_ratio"):
            assert results[f"{label}/{figure}"] >= 0
    assert results["vq_assign/N64_V32_D8/agreement"] == 1.0
    assert results["code_similarity/B16_V32/max_abs_diff"] < 1e-4
    assert "speedup" in capsys.readouterr().out


def test_run_names_a_missing_key():
    with pytest.raises(ValueError, match="suite.vq_dim: missing key"):
        run({k: v for k, v in TINY.items() if k != "vq_dim"})
