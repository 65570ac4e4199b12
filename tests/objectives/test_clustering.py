"""MCN pieces: cosine k-means with its queue, the centroid loss (eq. 6), reconstruction (eq. 8)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import loop_reference as ref
from mmdist.objectives import OnlineKMeans, cluster_loss, reconstruction_loss
from mmdist.objectives.clustering import cosine_assign, kmeans_step


def _directions(g, clusters, dim, per_cluster):
    """Rows scattered (with random lengths) around `clusters` orthogonal directions; labels."""
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0][:clusters]  # [K, D]
    labels = torch.arange(clusters).repeat_interleave(per_cluster)
    lengths = 0.5 + 2 * torch.rand(len(labels), 1, generator=g, dtype=torch.float64)
    rows = basis[labels] * lengths + 0.05 * torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    order = torch.randperm(len(labels), generator=g)
    return rows[order], labels[order]


def test_cosine_assign_and_lloyd_step_match_loops():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(12, 3, generator=g, dtype=torch.float64)
    centroids = torch.randn(4, 3, generator=g, dtype=torch.float64)
    labels = cosine_assign(data, centroids)
    for i in range(12):
        cosines = [float(F.cosine_similarity(data[i], c, dim=0)) for c in centroids]
        assert labels[i].item() == max(range(4), key=lambda k: cosines[k])
    updated = kmeans_step(data, centroids, labels)
    for k in range(4):
        members = [data[i] for i in range(12) if labels[i] == k]
        expected = sum(members) / len(members) if members else centroids[k]  # empty: stays put
        torch.testing.assert_close(updated[k], expected)


def test_lloyd_step_keeps_an_empty_centroid_in_place():
    data = torch.tensor([[1.0, 0.0], [0.9, 0.1]], dtype=torch.float64)
    centroids = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    updated = kmeans_step(data, centroids, cosine_assign(data, centroids))
    torch.testing.assert_close(updated[1], centroids[1])
    torch.testing.assert_close(updated[0], torch.tensor([0.95, 0.05], dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_online_kmeans_recovers_separated_directions(seed):
    g = torch.Generator().manual_seed(seed)
    rows, labels = _directions(g, clusters=5, dim=8, per_cluster=40)
    kmeans = OnlineKMeans(num_clusters=5, dim=8, queue_batches=10, refit_every=1, iters=50, seed=seed)
    for step, chunk in enumerate(rows.split(50)):
        targets = kmeans.step(chunk, step)
    assert kmeans.ready and targets is not None
    found = kmeans.assign(rows)
    # the partitions agree up to a renaming of the clusters
    pairs = {(int(a), int(b)) for a, b in zip(labels, found)}
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5 and len({b for _, b in pairs}) == 5


def test_online_kmeans_waits_for_enough_rows_and_refits_on_schedule():
    g = torch.Generator().manual_seed(0)
    rows, _ = _directions(g, clusters=4, dim=6, per_cluster=30)
    kmeans = OnlineKMeans(num_clusters=8, dim=6, queue_batches=3, refit_every=4, iters=10, seed=0)
    batches = rows.split(5)
    assert kmeans.step(batches[0], 0) is None  # 5 rows < 8 clusters
    assert not kmeans.ready
    assert kmeans.step(batches[1], 1) is not None  # 10 rows: first fit
    fits = [kmeans.fits]
    for step in range(2, 13):
        kmeans.step(batches[step], step)
        fits.append(kmeans.fits)
    # refits at steps 4, 8, 12 only
    assert fits == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4]


def test_online_kmeans_refits_once_per_optimizer_step_under_accumulation():
    """Every micro-step of an accumulated optimizer step arrives with the same step number (issue 9,
    deviation 8): the refit due at that step happens once, not once per micro-step."""
    g = torch.Generator().manual_seed(0)
    rows, _ = _directions(g, clusters=4, dim=6, per_cluster=30)
    kmeans = OnlineKMeans(num_clusters=8, dim=6, queue_batches=6, refit_every=4, iters=10, seed=0)
    micro = iter(rows.split(5))
    fits = []
    for step in range(1, 9):
        for _ in range(2):  # two micro-steps per optimizer step
            kmeans.step(next(micro), step)
        fits.append(kmeans.fits)
    assert fits == [1, 1, 1, 2, 2, 2, 2, 3]


def test_online_kmeans_queue_is_fifo_of_detached_batches():
    kmeans = OnlineKMeans(num_clusters=2, dim=2, queue_batches=3, refit_every=100, iters=1, seed=0)
    batches = [torch.full((2, 2), float(i), requires_grad=True) for i in range(5)]
    for step, batch in enumerate(batches):
        kmeans.step(batch, step)
    queued = kmeans.queued()
    torch.testing.assert_close(queued, torch.cat([b.detach() for b in batches[2:]]))
    assert not queued.requires_grad


def test_online_kmeans_refit_is_warm_started():
    g = torch.Generator().manual_seed(1)
    rows, _ = _directions(g, clusters=3, dim=5, per_cluster=30)
    kmeans = OnlineKMeans(num_clusters=3, dim=5, queue_batches=1, refit_every=1, iters=100, seed=0)
    kmeans.step(rows, 0)
    converged = kmeans.centroids.clone()
    kmeans.step(rows, 1)  # same data, started from the converged centroids: a fixed point
    torch.testing.assert_close(kmeans.centroids, converged)


def test_online_kmeans_state_round_trip():
    g = torch.Generator().manual_seed(2)
    rows, _ = _directions(g, clusters=3, dim=4, per_cluster=10)
    kmeans = OnlineKMeans(num_clusters=3, dim=4, queue_batches=2, refit_every=2, iters=5, seed=0)
    kmeans.step(rows, 0)
    restored = OnlineKMeans(num_clusters=3, dim=4, queue_batches=2, refit_every=2, iters=5, seed=0)
    restored.load_state_dict(kmeans.state_dict())
    torch.testing.assert_close(restored.assign(rows), kmeans.assign(rows))
    torch.testing.assert_close(restored.queued(), kmeans.queued())


def test_online_kmeans_rejects_bad_config_and_shapes():
    with pytest.raises(ValueError, match="refit_every"):
        OnlineKMeans(num_clusters=2, dim=2, queue_batches=1, refit_every=0, iters=1, seed=0)
    kmeans = OnlineKMeans(num_clusters=2, dim=3, queue_batches=1, refit_every=1, iters=1, seed=0)
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        kmeans.step(torch.zeros(4, 2), 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cluster_loss_matches_loops(seed):
    g = torch.Generator().manual_seed(seed)
    embedding = torch.randn(6, 4, generator=g, dtype=torch.float64)
    centroids = torch.randn(5, 4, generator=g, dtype=torch.float64)
    targets = torch.randint(5, (6,), generator=g)
    for margin in (1e-3, 0.3):
        got = cluster_loss(embedding, centroids, targets, margin=margin)
        assert got.item() == pytest.approx(ref.cluster(embedding, centroids, targets, margin), rel=1e-10)


def test_cluster_loss_gradient_reaches_embedding_only():
    g = torch.Generator().manual_seed(0)
    embedding = torch.randn(3, 4, generator=g, requires_grad=True)
    centroids = torch.randn(2, 4, generator=g, requires_grad=True)
    cluster_loss(embedding, centroids, torch.tensor([0, 1, 1]), margin=1e-3).backward()
    assert embedding.grad.abs().sum() > 0 and centroids.grad is None


@pytest.mark.parametrize("seed", [0, 1])
def test_reconstruction_loss_matches_loops_and_detaches_target(seed):
    g = torch.Generator().manual_seed(seed)
    prediction = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = reconstruction_loss(prediction, target)
    assert loss.item() == pytest.approx(ref.mse(prediction, target), rel=1e-12)
    loss.backward()
    torch.testing.assert_close(prediction.grad, 2 * (prediction - target).detach() / 24)
    assert target.grad is None


def test_kmeans_plus_plus_seeds_are_distinct_rows():
    from mmdist.objectives.clustering import kmeans_plus_plus

    g = torch.Generator().manual_seed(0)
    rows, _ = _directions(g, clusters=6, dim=8, per_cluster=5)
    seeds = kmeans_plus_plus(rows, 6, torch.Generator().manual_seed(0))
    matches = [int((rows == s).all(dim=1).nonzero()) for s in seeds]
    assert len(set(matches)) == 6
    # D^2 sampling spreads the seeds: no two in the same direction
    for a, b in itertools.combinations(range(6), 2):
        assert F.cosine_similarity(seeds[a], seeds[b], dim=0) < 0.5
