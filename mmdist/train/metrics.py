"""Training-time measurements: step timing, in-batch retrieval, cross-rank means, the run's history."""

from __future__ import annotations

import time
from contextlib import contextmanager
from itertools import combinations

import ray
import torch
import torch.distributed as torch_dist


class StepTimer:
    """Wall time of a report window and the part of it spent waiting for the next batch."""

    def __init__(self):
        self._start = time.perf_counter()
        self._wait = 0.0

    @contextmanager
    def waiting(self):
        begin = time.perf_counter()
        try:
            yield
        finally:
            self._wait += time.perf_counter() - begin

    def lap(self) -> dict:
        now = time.perf_counter()
        window = {"total_s": max(now - self._start, 1e-9), "wait_s": self._wait}
        self._start, self._wait = now, 0.0
        return window


@torch.no_grad()
def in_batch_recall_at_1(embeddings: dict) -> dict:
    """R@1 (fraction) of each modality pair within the global batch, pessimistic ties: a quick,
    cheap signal that retrieval rises above chance (1 / B). Text uses its own narration (index 0)."""
    vectors = {name: (value[:, 0] if value.ndim == 3 else value).float() for name, value in embeddings.items()}
    recalls = {}
    for query, candidate in combinations(sorted(vectors), 2):
        sim = torch.nn.functional.normalize(vectors[query], dim=-1) @ torch.nn.functional.normalize(
            vectors[candidate], dim=-1
        ).T
        rank = (sim >= sim.diagonal()[:, None]).sum(dim=1)  # 1 = the positive beats every other candidate
        recalls[f"r1_{query}_{candidate}"] = float((rank == 1).float().mean())
    return recalls


def mean_across_ranks(metrics: dict) -> dict:
    """Average scalar metrics over data-parallel ranks so every rank reports the same numbers."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() == 1:
        return dict(metrics)
    names = sorted(metrics)
    values = torch.tensor([float(metrics[name]) for name in names], dtype=torch.float64)
    torch_dist.all_reduce(values)
    values /= torch_dist.get_world_size()
    return dict(zip(names, values.tolist()))


@ray.remote(num_cpus=0)
class MetricsLog:
    """Collects the per-report metrics of a run so the driver can write `metrics.json` whichever node
    the workers ran on. A resumed run re-sends the history stored in its checkpoint; reports are kept
    once per step, the latest wins."""

    def __init__(self):
        self._by_step: dict[int, dict] = {}

    def append(self, metrics: dict) -> None:
        self._by_step[int(metrics["step"])] = metrics

    def extend(self, history: list[dict]) -> None:
        for metrics in history:
            self.append(metrics)

    def history(self) -> list[dict]:
        return [self._by_step[step] for step in sorted(self._by_step)]
