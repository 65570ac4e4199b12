"""Distributed correctness on two real gloo processes (SPEC 6, 8.7, 8.8).

One spawn runs every scenario (process start-up dominates the cost); each test then
compares what the ranks recorded against a single-process computation on the
concatenated batch, done here in the parent process:
  - gathered losses and DDP-averaged parameter gradients == single-process loss and
    gradients (float64, 1e-6), for info_nce, mms_loss, cmcm_loss, mil_nce and a whole
    mc3 recipe with missing modalities; a naive gather is shown to fail the same check;
  - the VQ codebook is bit-identical on both ranks after 50 steps with dead-code resets;
  - the MCN k-means centroids are identical on both ranks.
"""

from __future__ import annotations


import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from mmdist import dist
from mmdist.objectives import OnlineKMeans, cmcm_loss, code_distribution, info_nce, mil_nce, mms_loss, recipe_loss
from mmdist.vq import VectorQuantizer
from tests.conftest import free_port



WORLD = 2
LOCAL = 4  # clips per rank
D_IN, D, P, L, V = 6, 5, 3, 4, 7
VQ_STEPS = 50
KMEANS_STEPS = 6
MC3 = {"name": "mc3", "modalities": ["video", "audio", "text"], "temperature": 0.1, "anchor": "audio",
       "consensus_alphas": {"video": 0.5, "text": 1.0}, "consensus_weight": 1.0, "align_steps": 0,
       "consensus_inverse": "unscaled", "refine_contrastive": True}


# ---------------------------------------------------------------- the shared problem


def make_problem():
    """The global batch and the parameters, identical on every process (seeded)."""
    g = torch.Generator().manual_seed(1234)
    batch = WORLD * LOCAL

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    mask = torch.rand(batch, P, generator=g) < 0.6
    mask[:, 0] = True
    present_audio = torch.ones(batch, dtype=torch.bool)
    present_audio[[1, 6]] = False  # one clip without audio on each rank
    inputs = {"video": randn(batch, D_IN), "audio": randn(batch, D_IN), "text": randn(batch, P, D_IN),
              "fine_video": randn(batch, L, D_IN), "fine_audio": randn(batch, L, D_IN),
              "mask": mask, "present_audio": present_audio}
    params = {name: randn(D_IN, D) for name in ("video", "audio", "text", "code_video", "code_audio")}
    codebook = randn(V, D)
    return inputs, params, codebook


def losses(inputs, params, codebook, gather, gather_plain):
    """Every checked loss, from (possibly local) inputs; `gather` is applied to model outputs."""
    v = gather(inputs["video"] @ params["video"])  # [B, D]
    a = gather(inputs["audio"] @ params["audio"])
    t = gather(inputs["text"] @ params["text"])  # [B, P, D]
    p_v = gather(code_distribution(inputs["fine_video"] @ params["code_video"], codebook))  # [B, V]
    p_a = gather(code_distribution(inputs["fine_audio"] @ params["code_audio"], codebook))
    mask, present_audio = gather_plain(inputs["mask"]), gather_plain(inputs["present_audio"])
    outputs = {"embeddings": {"video": v, "audio": a, "text": t}, "text_candidate_mask": mask,
               "present": {"video": torch.ones_like(present_audio), "audio": present_audio,
                           "text": torch.ones_like(present_audio)}}
    return {
        "info_nce": info_nce(v, a, 0.1),
        "mms_loss": mms_loss(v @ a.t(), margin=0.05),
        "cmcm_loss": cmcm_loss(p_v, p_a),
        "mil_nce": mil_nce(v, t, 0.1, text_mask=mask),
        "mc3_recipe": recipe_loss(MC3, outputs, step=1)[0],
    }


def loss_and_grads(make_loss, params):
    """{loss name: (value, {param: grad})} with fresh leaves per loss."""
    results = {}
    names = list(make_loss({k: p.clone() for k, p in params.items()}).keys())
    for name in names:
        leaves = {k: p.clone().requires_grad_() for k, p in params.items()}
        loss = make_loss(leaves)[name]
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        results[name] = (loss.detach(), {k: (g if g is not None else torch.zeros_like(leaves[k]))
                                         for k, g in zip(leaves, grads)})
    return results


class _NaiveGather(torch.autograd.Function):
    """The known trap: all-gather whose backward returns only the local slice (no sum)."""

    @staticmethod
    def forward(ctx, x):
        chunks = [torch.empty_like(x) for _ in range(WORLD)]
        torch_dist.all_gather(chunks, x.contiguous())
        ctx.rank, ctx.rows = dist.rank(), x.shape[0]
        return torch.cat(chunks)

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def vq_data(rank: int, step: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-specific rows from two clusters (few codes used: dead codes appear), modality ids."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    centres = torch.tensor([[2.0, 0, 0, 0], [0, -2.0, 1.0, 0]], dtype=dtype) * (1 + rank)
    rows = centres[torch.randint(2, (12,), generator=g)] + 0.3 * torch.randn(12, 4, generator=g, dtype=dtype)
    return rows, torch.randint(3, (12,), generator=g)


def kmeans_data(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(50 + 10 * rank + step)
    centres = torch.eye(4, dtype=torch.float64)[torch.randint(4, (5,), generator=g)]
    return centres + 0.2 * torch.randn(5, 4, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- the worker


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        record = {"rank": dist.rank(), "world": dist.world_size(), "distributed": dist.is_distributed()}
        record["mean"] = dist.mean_across_ranks({"step": 3, "loss": float(rank), "r1": 0.5 * rank})
        record["objects"] = dist.all_gather_objects({"rank": rank, "rows": list(range(rank + 1))})
        inputs, params, codebook = make_problem()
        local = {k: x[rank * LOCAL : (rank + 1) * LOCAL] for k, x in inputs.items()}

        def averaged(gather):
            results = loss_and_grads(lambda p: losses(local, p, codebook, gather, dist.gather_no_grad), params)
            for _, grads in results.values():  # what DeepSpeed / DDP do: average over ranks
                for g in grads.values():
                    dist.all_reduce_sum_(g).div_(WORLD)
            return results

        record["gathered"] = averaged(dist.gather_with_grad)
        record["naive"] = averaged(_NaiveGather.apply)

        # unequal shards: 3 rows on rank 0, 2 on rank 1
        x = torch.arange(3.0 - rank).unsqueeze(1).double().add(10 * rank).requires_grad_()
        gathered = dist.gather_with_grad(x)
        weights = torch.arange(1.0, 6.0, dtype=torch.float64).unsqueeze(1)
        (gathered * weights).sum().backward()
        record["ragged"] = (gathered.detach(), x.grad)

        for dtype in (torch.float32, torch.float64):
            vq = VectorQuantizer(16, 4, dead_after=3, modalities=("video", "audio", "text"), seed=7).to(dtype)
            for step in range(VQ_STEPS):
                vq(*vq_data(rank, step, dtype))
            both = dist.gather_no_grad(vq.codebook.unsqueeze(0))  # [2, V, D]
            record[f"vq_{dtype}"] = {"codebooks": both, "usage": vq.usage(), "state": vq.state_dict()}

        kmeans = OnlineKMeans(num_clusters=4, dim=4, queue_batches=3, refit_every=2, iters=20, seed=0,
                              agree=dist.broadcast_)
        for step in range(KMEANS_STEPS):
            kmeans.step(dist.gather_no_grad(kmeans_data(rank, step)), step)
        record["kmeans"] = dist.gather_no_grad(kmeans.centroids.unsqueeze(0))  # [2, K, D]
        torch.save(record, f"{out_dir}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---------------------------------------------------------------- the checks


def test_rank_helpers(ranks):
    assert [(r["rank"], r["world"], r["distributed"]) for r in ranks] == [(0, 2, True), (1, 2, True)]
    assert (dist.rank(), dist.world_size(), dist.is_distributed()) == (0, 1, False)
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather_with_grad(x) is x
    assert torch.equal(dist.all_reduce_sum_(x.detach().clone()), x.detach())
    assert dist.all_reduce_sum_with_grad(x) is x


def test_metric_means_and_object_gathers(ranks):
    for record in ranks:
        assert record["mean"] == {"loss": 0.5, "r1": 0.25, "step": 3.0}
        assert record["objects"] == [{"rank": 0, "rows": [0]}, {"rank": 1, "rows": [0, 1]}]
    assert dist.mean_across_ranks({"loss": 2}) == {"loss": 2}  # one process: as given
    assert dist.all_gather_objects("x") == ["x"]


@pytest.mark.parametrize("name", ["info_nce", "mms_loss", "cmcm_loss", "mil_nce", "mc3_recipe"])
def test_gathered_loss_and_averaged_gradients_equal_single_process(ranks, name):
    inputs, params, codebook = make_problem()
    identity = lambda x: x  # noqa: E731
    single = loss_and_grads(lambda p: losses(inputs, p, codebook, identity, identity), params)[name]
    for record in ranks:
        loss, grads = record["gathered"][name]
        torch.testing.assert_close(loss, single[0], rtol=0, atol=1e-6)
        for param, grad in grads.items():
            torch.testing.assert_close(grad, single[1][param], rtol=0, atol=1e-6, msg=f"{name}: grad of {param}")
    assert max(g.abs().max() for g in single[1].values()) > 1e-3  # a non-trivial gradient is compared


@pytest.mark.parametrize("name", ["info_nce", "mil_nce"])
def test_naive_gather_scales_gradients_down(ranks, name):
    inputs, params, codebook = make_problem()
    identity = lambda x: x  # noqa: E731
    single = loss_and_grads(lambda p: losses(inputs, p, codebook, identity, identity), params)[name]
    loss, grads = ranks[0]["naive"][name]
    torch.testing.assert_close(loss, single[0], rtol=0, atol=1e-6)  # same forward ...
    torch.testing.assert_close(grads["video"], single[1]["video"] / WORLD, rtol=0, atol=1e-6)  # ... grad / W


def test_gather_with_unequal_shards(ranks):
    expected_rows = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]], dtype=torch.float64)
    for rank, record in enumerate(ranks):
        gathered, grad = record["ragged"]
        torch.testing.assert_close(gathered, expected_rows)
        # every rank computes the same loss; the sum over ranks gives W x its rows' weights
        own = torch.arange(1.0, 6.0, dtype=torch.float64).unsqueeze(1)[[0, 1, 2] if rank == 0 else [3, 4]]
        torch.testing.assert_close(grad, WORLD * own)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_codebook_bit_identical_across_ranks_with_resets(ranks, dtype):
    for record in ranks:
        codebooks = record[f"vq_{dtype}"]["codebooks"]
        assert torch.equal(codebooks[0], codebooks[1])
        assert record[f"vq_{dtype}"]["usage"]["resets"] > 0
    assert torch.equal(ranks[0][f"vq_{dtype}"]["codebooks"], ranks[1][f"vq_{dtype}"]["codebooks"])
    for key, value in ranks[0][f"vq_{dtype}"]["state"].items():
        assert torch.equal(value, ranks[1][f"vq_{dtype}"]["state"][key]), key


def test_codebook_equals_single_process_on_the_concatenated_batch(ranks):
    vq = VectorQuantizer(16, 4, dead_after=3, modalities=("video", "audio", "text"), seed=7).double()
    for step in range(VQ_STEPS):
        parts = [vq_data(rank, step, torch.float64) for rank in range(WORLD)]
        vq(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    record = ranks[0][f"vq_{torch.float64}"]
    torch.testing.assert_close(record["codebooks"][0], vq.codebook, rtol=1e-9, atol=1e-9)
    assert record["usage"]["resets"] == vq.usage()["resets"]
    for name, counts in vq.usage()["counts"].items():  # per-modality counts are global
        assert torch.equal(record["usage"]["counts"][name], counts)


def test_kmeans_centroids_identical_across_ranks(ranks):
    for record in ranks:
        assert torch.equal(record["kmeans"][0], record["kmeans"][1])
    kmeans = OnlineKMeans(num_clusters=4, dim=4, queue_batches=3, refit_every=2, iters=20, seed=0)
    for step in range(KMEANS_STEPS):
        kmeans.step(torch.cat([kmeans_data(rank, step) for rank in range(WORLD)]), step)
    torch.testing.assert_close(ranks[0]["kmeans"][0], kmeans.centroids)
