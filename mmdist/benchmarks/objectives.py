"""Benchmark suite `objectives`: the two matrix-product forms the objectives rely on.

1. `code_similarity` (CMCM eq. 6) as two matmuls against the naive [B, B, V] broadcast.
   The naive form here is the *careful* one (a single [B, B, V] buffer filled in place);
   the textbook expression `(p_a[:, None] * log_b[None] + p_b[None] * log_a[:, None]).sum(-1)`
   needs three such buffers (12 GiB at B = V = 1024 in fp32), too much for a shared machine.
2. VQ nearest-codeword assignment by |x|^2 - 2 x.e + |e|^2 (one matmul) against `torch.cdist`.

Time: median wall time of `repeats` calls after one warm-up call, on `threads` threads.
Peak memory: the rise of the process's peak resident set size during one call (Linux
VmHWM, reset through /proc/self/clear_refs), with glibc's mmap threshold pinned at
64 KiB so every tensor above that gets fresh pages instead of recycled heap.
`tracemalloc` is not used: it sees only Python's allocator, not torch's.
Config keys (all required): batch_sizes, num_codes, vq_rows, vq_dim, repeats, threads, seed.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import torch

from mmdist.benchmarks.common import pin_mmap_threshold, timed_peak
from mmdist.config import check_section
from mmdist.config_schema.benchmarks import ObjectivesSuite
from mmdist.objectives import code_similarity
from mmdist.objectives.code_matching import PROB_FLOOR
from mmdist.vq import squared_distances

MIB = 2**20


def naive_code_similarity(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """CMCM eq. 6 through one [B, B, V] tensor (the form the matmul version avoids)."""
    log_a = p_a.clamp_min(PROB_FLOOR).log()
    log_b = p_b.clamp_min(PROB_FLOOR).log()
    terms = p_a.unsqueeze(1) * log_b.unsqueeze(0)  # [B, B, V]
    terms.addcmul_(p_b.unsqueeze(0), log_a.unsqueeze(1))  # in place: still one [B, B, V] buffer
    return terms.sum(dim=2)  # [B, B]


def assign_by_matmul(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return squared_distances(x, codebook).argmin(dim=1)


def assign_by_cdist(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, codebook).argmin(dim=1)


def peak_rss_rise(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes by which one call of fn raises the peak resident set size."""
    return timed_peak(fn)[1]


def median_seconds(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare(label: str, fast: Callable, slow: Callable, repeats: int) -> dict[str, float]:
    fast_s, slow_s = median_seconds(fast, repeats), median_seconds(slow, repeats)
    fast_bytes, slow_bytes = peak_rss_rise(fast), peak_rss_rise(slow)
    return {
        f"{label}/fast_s": fast_s,
        f"{label}/slow_s": slow_s,
        f"{label}/speedup": slow_s / fast_s,
        f"{label}/fast_peak_mib": fast_bytes / MIB,
        f"{label}/slow_peak_mib": slow_bytes / MIB,
        f"{label}/memory_ratio": slow_bytes / max(fast_bytes, 1),
    }


def run(cfg: Mapping) -> dict[str, float]:
    """Run the suite, print its figures, return them as a flat dict."""
    cfg = check_section(cfg, ObjectivesSuite, "suite")  # keys and types (mmdist/config_schema/)
    torch.set_num_threads(int(cfg["threads"]))
    pin_mmap_threshold()
    generator = torch.Generator().manual_seed(int(cfg["seed"]))
    codes, repeats = int(cfg["num_codes"]), int(cfg["repeats"])
    results: dict[str, float] = {}

    for batch in cfg["batch_sizes"]:
        batch = int(batch)
        p_a = torch.softmax(4 * torch.randn(batch, codes, generator=generator), dim=1)
        p_b = torch.softmax(4 * torch.randn(batch, codes, generator=generator), dim=1)
        label = f"code_similarity/B{batch}_V{codes}"
        results.update(_compare(label, lambda: code_similarity(p_a, p_b),
                                lambda: naive_code_similarity(p_a, p_b), repeats))
        results[f"{label}/max_abs_diff"] = float((code_similarity(p_a, p_b) - naive_code_similarity(p_a, p_b))
                                                 .abs().max())
        results[f"{label}/naive_tensor_mib"] = batch * batch * codes * 4 / MIB
        del p_a, p_b

    rows, dim = int(cfg["vq_rows"]), int(cfg["vq_dim"])
    x = torch.randn(rows, dim, generator=generator)
    codebook = torch.randn(codes, dim, generator=generator)
    label = f"vq_assign/N{rows}_V{codes}_D{dim}"
    results.update(_compare(label, lambda: assign_by_matmul(x, codebook), lambda: assign_by_cdist(x, codebook),
                            repeats))
    results[f"{label}/agreement"] = float((assign_by_matmul(x, codebook) == assign_by_cdist(x, codebook))
                                          .double().mean())
    _print(results)
    return results


def _print(results: dict[str, float]) -> None:
    labels = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in results))  # in the order they ran
    print(f"{'case':40s} {'fast s':>9s} {'slow s':>9s} {'speedup':>8s} {'fast MiB':>9s} {'slow MiB':>9s} {'mem x':>8s}")
    for label in labels:
        r = {key.rsplit("/", 1)[1]: value for key, value in results.items() if key.startswith(label + "/")}
        print(f"{label:40s} {r['fast_s']:9.4f} {r['slow_s']:9.4f} {r['speedup']:8.1f} "
              f"{r['fast_peak_mib']:9.1f} {r['slow_peak_mib']:9.1f} {r['memory_ratio']:8.1f}")
    print("fast = matmul form; slow = naive [B, B, V] broadcast (code_similarity) or torch.cdist (vq_assign); "
          "memory = peak RSS rise of one call")
