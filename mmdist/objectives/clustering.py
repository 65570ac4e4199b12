"""Multimodal clustering, MCN eqs. 4-9 (SPEC Sec. 3 and 8.5, following the authors' code).

The fused feature M = mean of the modality embeddings (eq. 4) of recent batches sits
in a FIFO queue; k-means in cosine mode over that queue (eq. 5) gives centroids;
each modality's embedding is pulled to the centroid nearest to its clip's M by a
margin softmax over all centroids (eq. 6, combined over modalities by eq. 7). A
per-modality decoder reconstructs the modality's input features (eqs. 8-9).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import torch
import torch.nn.functional as F


def cosine_assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar centroid for each row: x [N, D], centroids [K, D] -> [N]."""
    return (F.normalize(x, dim=-1) @ F.normalize(centroids, dim=-1).t()).argmax(dim=1)


def kmeans_step(data: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One Lloyd update: each centroid becomes the mean of its rows (raw features, as the
    authors' cosine k-means does); a centroid without rows keeps its place.

    data [N, D], centroids [K, D], labels [N] -> [K, D]. The sums are a one-hot matrix
    product, which is deterministic on GPU (index_add_ uses atomics).
    """
    one_hot = F.one_hot(labels, centroids.shape[0]).to(data.dtype)  # [N, K]
    sums = one_hot.t() @ data  # [K, D]
    counts = one_hot.sum(dim=0)  # [K]
    means = sums / counts.clamp_min(1.0).unsqueeze(1)
    return torch.where((counts > 0).unsqueeze(1), means, centroids)


def kmeans_plus_plus(data: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding in cosine distance (1 - cos): data [N, D] -> [K, D] distinct rows.

    Random rows (the authors' init) often put two seeds in one cluster; D^2 sampling
    spreads them, which matters at the first fit when the queue is still short.
    """
    unit = F.normalize(data, dim=-1)
    chosen = [int(torch.randint(data.shape[0], (1,), generator=generator))]
    distance = (1 - unit @ unit[chosen[0]]).clamp_min(0)  # [N]
    for _ in range(1, num_clusters):
        weights = distance.pow(2).cpu().double()
        if weights.sum() <= 0:  # fewer distinct directions than clusters: any unused row
            weights = torch.ones_like(weights)
            weights[chosen] = 0
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        distance = torch.minimum(distance, (1 - unit @ unit[pick]).clamp_min(0))
    return data[torch.tensor(chosen, device=data.device)].clone()


class OnlineKMeans:
    """Cosine k-means over a FIFO queue of detached fused features (MCN eq. 5, SPEC 8.5).

    `step(fused, step)` pushes the global batch's fused features, re-fits every
    `refit_every` steps (at most `iters` Lloyd iterations, warm-started from the previous
    centroids) and returns the nearest-centroid targets of the batch. The first fit
    waits until the queue holds at least `num_clusters` rows; before it, `step` returns
    None and the recipe's cluster term is 0. Every rank feeds the same gathered
    features, so the queues are identical by construction; after each fit `agree`
    makes the ranks' centroids one copy (the training loop passes `mmdist.dist.broadcast_`:
    rank 0's), so no floating-point difference between devices can make them drift apart.
    Without it (one process) the centroids are this process's own.
    """

    def __init__(self, num_clusters: int, dim: int, queue_batches: int, refit_every: int, iters: int, seed: int,
                 agree: Callable[[torch.Tensor], torch.Tensor] | None = None):
        for name, value in (("num_clusters", num_clusters), ("dim", dim), ("queue_batches", queue_batches),
                            ("refit_every", refit_every), ("iters", iters)):
            if value < 1:
                raise ValueError(f"OnlineKMeans: {name} must be >= 1, got {value}")
        self.num_clusters, self.dim = num_clusters, dim
        self.refit_every, self.iters, self.seed = refit_every, iters, seed
        self.agree = agree or (lambda centroids: centroids)
        self.queue: deque[torch.Tensor] = deque(maxlen=queue_batches)
        self.centroids: torch.Tensor | None = None  # [K, D]
        self.fits = 0
        self.last_fit_step: int | None = None

    @property
    def ready(self) -> bool:
        return self.centroids is not None

    def queued(self) -> torch.Tensor:
        """All queued fused features, oldest first: [Q, D]."""
        return torch.cat(list(self.queue))

    def push(self, fused: torch.Tensor) -> None:
        if fused.dim() != 2 or fused.shape[1] != self.dim:
            raise ValueError(f"OnlineKMeans: expected fused features [B, {self.dim}], got {list(fused.shape)}")
        self.queue.append(fused.detach().clone())

    def fit(self) -> None:
        """Lloyd iterations on the queue from the current centroids (k-means++ seeds at the first fit)."""
        data = self.queued()  # [Q, D]
        if self.centroids is None:
            centroids = kmeans_plus_plus(data, self.num_clusters, torch.Generator().manual_seed(self.seed))
        else:
            centroids = self.centroids.to(data.dtype)
        labels = cosine_assign(data, centroids)
        for _ in range(self.iters):
            centroids = kmeans_step(data, centroids, labels)
            new_labels = cosine_assign(data, centroids)
            if torch.equal(new_labels, labels):
                break
            labels = new_labels
        self.centroids = self.agree(centroids.contiguous())
        self.fits += 1

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest centroid (cosine) of each row: x [B, D] -> [B] long."""
        if self.centroids is None:
            raise RuntimeError("OnlineKMeans.assign called before the first fit")
        return cosine_assign(x, self.centroids.to(x.dtype))

    def step(self, fused: torch.Tensor, step: int) -> torch.Tensor | None:
        """Push `fused` [B, D], re-fit when due, return its targets [B] (None before the first fit)."""
        self.push(fused)
        queued_rows = sum(chunk.shape[0] for chunk in self.queue)
        first_fit_due = self.centroids is None and queued_rows >= self.num_clusters
        # once per optimizer step: with gradient accumulation every micro-step arrives with the same step
        refit_due = self.centroids is not None and step % self.refit_every == 0 and step != self.last_fit_step
        if first_fit_due or refit_due:
            self.fit()
            self.last_fit_step = step
        return self.assign(fused.detach()) if self.ready else None

    def state_dict(self) -> dict:
        return {"centroids": self.centroids, "queue": list(self.queue), "fits": self.fits,
                "last_fit_step": self.last_fit_step}

    def load_state_dict(self, state: dict) -> None:
        self.centroids = state["centroids"]
        self.queue.clear()
        self.queue.extend(state["queue"])
        self.fits = state["fits"]
        self.last_fit_step = state.get("last_fit_step")  # absent in checkpoints written before it existed


def cluster_loss(
    embedding: torch.Tensor, centroids: torch.Tensor, targets: torch.Tensor, margin: float
) -> torch.Tensor:
    """Semantic centroid loss of one modality, MCN eq. 6 (the recipe averages eq. 7 over modalities).

    embedding [B, D], centroids [K, D] (constants), targets [B] = nearest centroid of
    each clip's fused feature. Logits are dot products e . mu_k [B, K]; the margin is
    subtracted from the target logit (in numerator and denominator, as the authors'
    `cluster_contrast` does); cross-entropy averaged over the batch.
    """
    if embedding.dim() != 2 or centroids.dim() != 2 or embedding.shape[1] != centroids.shape[1]:
        raise ValueError(f"cluster_loss: expected embedding [B, D] and centroids [K, D], got "
                         f"{list(embedding.shape)} and {list(centroids.shape)}")
    logits = embedding @ centroids.detach().to(embedding.dtype).t()  # [B, K]
    logits = logits - margin * F.one_hot(targets, centroids.shape[0]).to(logits.dtype)
    return F.cross_entropy(logits, targets)


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reconstruction of a modality's input features, MCN eq. 8 (its minus sign is a typo).

    prediction, target [B, F] -> mean squared error over all elements. The target is
    detached: our encoders are trained (MCN's backbones were frozen), and a gradient
    into the target would let the encoder shrink its features to make them trivial to
    reconstruct.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"reconstruction_loss: prediction {list(prediction.shape)} and target "
                         f"{list(target.shape)} differ in shape")
    return F.mse_loss(prediction, target.detach())
