"""Training-time measurements: step timing, in-batch retrieval, the run's history (cross-rank means: mmdist.dist)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from itertools import combinations

import ray
import torch

from mmdist.contracts import ModelOutput, clip_vectors
from mmdist.models.heads import comparison_space
from mmdist.ranks import ranks_from_similarity


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
def in_batch_recall_at_1(outputs: ModelOutput) -> dict:
    """R@1 (fraction) of each modality pair within the global batch: a quick, cheap signal that retrieval
    rises above chance (1 / B). `outputs`: the model's (gathered) outputs.

    Each pair is compared where evaluation compares it (`comparison_space`: an MMV FAC model's video
    and audio in S_va, `outputs["fac"]`, everything else in `outputs["embeddings"]`), cosine, with
    evaluation's rank rule (`mmdist.ranks`: ties count against the model). Text uses its own narration
    (`clip_vectors`). Keys `r1_<a>_<b>`, `a` before `b` alphabetically, `a` the query."""
    recalls = {}
    for query, candidate in combinations(sorted(outputs["embeddings"]), 2):
        q, c = (vector.float() for vector in _compared_vectors(outputs, query, candidate))
        sim = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T  # [B, B]
        rank = ranks_from_similarity(sim, check_finite=False)  # a diverging run reports, it does not crash
        recalls[f"r1_{query}_{candidate}"] = float((rank == 1).float().mean())
    return recalls


def _compared_vectors(outputs: ModelOutput, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor]:
    """a's and b's per-clip vectors `[B, D]` where evaluation compares them."""
    if comparison_space((a, b), "fac" in outputs) == "va":
        return outputs["fac"][f"{a}_va"], outputs["fac"][f"{b}_va"]
    return clip_vectors(a, outputs["embeddings"][a]), clip_vectors(b, outputs["embeddings"][b])


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
