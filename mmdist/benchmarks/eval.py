"""Benchmark suite `eval`: chunked retrieval scoring at N = 10k and 100k candidates (SPEC Sec. 5).

Inputs: N random unit candidate vectors of dimension D and `num_queries` random unit queries
(query i's positive is candidate i; null: N queries). Each method scores every query against all N
candidates, on the same inputs and `threads`:

- `ours_ranks`: `chunked_ranks` (the ranks behind `retrieval_metrics`: per chunk of `chunk_size`
  query rows, the matmul and the pessimistic rank count) followed by `metrics_from_ranks`;
- `bare_chunked`: the baseline, a bare loop `(q[chunk] @ c.T).topk(k)` over the same chunks, written
  here without any mmdist code: the cost of the matrix product and top-k alone;
- `bare_full` (only when the Nq x N matrix fits `full_matrix_max_gib`): one `q @ c.T`, then `.topk(k)`.
  The full 100k x 100k matrix would take 40 GB: at 100k the baseline is the chunked loop.

Work and time grow linearly with the number of queries, while peak memory depends on chunk_size x N
only: a 10k-query subset at N = 100k measures the 100k memory exactly and the time of a tenth of
the queries. Time: median over `repeats` rounds after one warm-up call on one chunk; rounds
interleave the methods so that load changes on a shared machine hit all of them alike. Peak
memory: the largest rise of the process's peak resident set size during a call (Linux VmHWM,
reset before each call; glibc's mmap threshold pinned as in mmdist.benchmarks.objectives).
Targets: ours_ranks peak <= 1 GiB at N = 100k and ours_ranks time <= 1.5 x bare_chunked.
Config keys (all required): sizes, num_queries, dim, k, chunk_size, repeats, threads, seed,
full_matrix_max_gib.
"""

from __future__ import annotations

import statistics
from typing import Callable, Mapping

import torch

from mmdist.benchmarks.common import pin_mmap_threshold, timed_peak
from mmdist.config import check_section
from mmdist.config_schema.benchmarks import EvalSuite
from mmdist.eval.retrieval import chunked_ranks, metrics_from_ranks

MIB, GIB = 2**20, 2**30


def random_unit_vectors(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)  # [N, D]


def bare_chunked_topk(queries: torch.Tensor, candidates: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """The baseline: matrix product and top-k per chunk, nothing else."""
    candidates_t = candidates.T.contiguous()
    indices = [(queries[start : start + chunk_size] @ candidates_t).topk(k, dim=1).indices for start in range(0, len(queries), chunk_size)]
    return torch.cat(indices)


def bare_full_topk(queries: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    return (queries @ candidates.T).topk(k, dim=1).indices  # one [N, N] matrix


def measure(methods: dict[str, tuple[Callable, Callable]], repeats: int) -> dict[str, float]:
    """Median time and largest peak-memory rise of each method over `repeats` rounds, after one
    warm-up call each. Rounds interleave the methods (A, B, C, A, B, C, ...): on a shared machine a
    change of load then hits every method alike instead of one of them."""
    for _, warm_up in methods.values():
        warm_up()
    calls: dict[str, list[tuple[float, int]]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (fn, _) in methods.items():
            calls[name].append(timed_peak(fn))
    figures = {}
    for name, results in calls.items():
        figures[f"{name}_s"] = statistics.median(seconds for seconds, _ in results)
        figures[f"{name}_peak_mib"] = max(peak for _, peak in results) / MIB
    return figures


def run(cfg: Mapping) -> dict[str, float]:
    """Run the suite, print its figures, return them as a flat dict (`N<size>/<figure>`)."""
    cfg = check_section(cfg, EvalSuite, "suite")  # keys and types (mmdist/config_schema/)
    torch.set_num_threads(int(cfg["threads"]))
    pin_mmap_threshold()
    generator = torch.Generator().manual_seed(int(cfg["seed"]))
    dim, k, chunk, repeats = int(cfg["dim"]), int(cfg["k"]), int(cfg["chunk_size"]), int(cfg["repeats"])
    results: dict[str, float] = {}
    for size in (int(n) for n in cfg["sizes"]):
        candidates = random_unit_vectors(size, dim, generator)  # [N, D]
        num_queries = min(size, int(cfg["num_queries"] or size))
        queries = random_unit_vectors(num_queries, dim, generator)  # [Nq, D]; query i's positive: candidate i
        head = queries[:chunk]  # warm-up input: one chunk
        methods = {
            "ours_ranks": (
                lambda: metrics_from_ranks(chunked_ranks(queries, candidates, chunk, cfg["rank_block"])),
                lambda: chunked_ranks(head, candidates, chunk, cfg["rank_block"]),
            ),
            "bare_chunked": (
                lambda: bare_chunked_topk(queries, candidates, k, chunk),
                lambda: bare_chunked_topk(head, candidates, k, chunk),
            ),
        }
        if num_queries * size * 4 <= float(cfg["full_matrix_max_gib"]) * GIB:
            methods["bare_full"] = (lambda: bare_full_topk(queries, candidates, k), lambda: bare_full_topk(head, candidates, k))
        figures = measure(methods, repeats)
        figures["ranks_time_ratio"] = figures["ours_ranks_s"] / figures["bare_chunked_s"]
        figures["num_queries"] = num_queries
        figures["full_matrix_gib"] = num_queries * size * 4 / GIB
        results.update({f"N{size}/{name}": value for name, value in figures.items()})
        del queries, candidates, head, methods
    _print(results, dim, chunk, k, int(cfg["threads"]))
    return results


def _print(results: dict[str, float], dim: int, chunk: int, k: int, threads: int) -> None:
    labels = list(dict.fromkeys(key.split("/")[0] for key in results))
    print(f"retrieval scoring, D={dim}, chunk={chunk} query rows, k={k}, {threads} thread(s); time s (peak RSS rise MiB)")
    print(f"{'N':>8s} {'queries':>8s} {'ours ranks':>18s} {'bare chunked':>18s} {'bare full':>18s} {'ranks/bare':>11s}")
    for label in labels:
        r = {key.split("/")[1]: value for key, value in results.items() if key.startswith(label + "/")}

        def cell(name: str) -> str:
            return f"{r[name + '_s']:8.2f} ({r[name + '_peak_mib']:6.0f})" if name + "_s" in r else f"{'-':>18s}"

        print(f"{label[1:]:>8s} {r['num_queries']:8.0f} {cell('ours_ranks')} {cell('bare_chunked')} {cell('bare_full')} "
              f"{r['ranks_time_ratio']:11.2f}")
    print("bare chunked = (q[chunk] @ c.T).topk(k) per chunk; bare full = one N x N matrix, then topk (only where it fits)")
