"""Rank / world helpers and the one place that communicates across data-parallel ranks.

Everything in mmdist that gathers or reduces goes through this module; without an
initialised process group every helper is the identity (single process).

Gradient scheme (SPEC Sec. 6 and 8.7): **the global loss on every rank.**
Each rank gathers the embeddings (and code distributions) of all ranks with
`gather_with_grad` and computes the *full* loss of the global batch, so every rank
holds the same scalar L. The backward of the gather all-reduce-SUMs the incoming
gradient and keeps this rank's slice: rank r receives

    sum over ranks r' of dL/dx_r  =  W * dL/dx_r,

and its parameter gradient is W * dL/dx_r * dx_r/dtheta. DeepSpeed / DDP then
AVERAGE the parameter gradients over the W ranks:

    (1/W) sum_r W * dL/dx_r * dx_r/dtheta  =  dL/dtheta,

exactly the gradient of the single-process loss on the concatenated batch. The
known trap (open_clip issue 616, MIL-NCE's `AllGather`) is a gather whose backward
returns only the local slice *without* the sum: that yields dL/dtheta / W.

Why this scheme rather than open_clip's "local queries against gathered keys":
the recipes compose terms whose normalisation is global (missing-modality
reweighting over the valid clips of the whole batch, MIL-NCE's two-sided
denominator, per-sample consensus means, k-means on the global queue). Computing
the global loss everywhere makes every such term exact without per-term rank
bookkeeping, and a term computed from local tensors only (e.g. the commitment
loss, a local mean) is also correct after averaging. The cost is that each rank
evaluates the B x B similarity matrices of the whole batch, which is small next to
the encoders. `tests/test_dist.py` proves the equivalence on two gloo processes.

Ranks may hold different local batch sizes: the gathers exchange sizes first.
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised (any world size)."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def world_size() -> int:
    return torch_dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch_dist.get_rank() if is_distributed() else 0


def _gather_sizes(local_rows: int, device: torch.device) -> list[int]:
    """Row counts of every rank's tensor, in rank order."""
    size = torch.tensor([local_rows], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    torch_dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_rows(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's x along dim 0 (rows padded to the largest rank for the exchange)."""
    x = x.contiguous()
    largest = max(sizes)
    if x.shape[0] < largest:
        padding = x.new_zeros((largest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, padding])
    chunks = [torch.empty_like(x) for _ in sizes]
    torch_dist.all_gather(chunks, x)
    return torch.cat([chunk[:rows] for chunk, rows in zip(chunks, sizes)])  # [sum(sizes), ...]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward all-reduce-sums the gradient, then keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        sizes = _gather_sizes(x.shape[0], x.device)
        ctx.start = sum(sizes[: rank()])
        ctx.rows = x.shape[0]
        return _all_gather_rows(x, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may reuse `grad`
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order, differentiable (see the module docstring).

    x: [b, ...] on this rank -> [sum of b over ranks, ...] (= [W*b, ...] for equal
    shards). Identity without a process group. Every rank must call it, in the same
    order, and must later run backward through it (a collective runs in backward).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order, detached: [b, ...] -> [sum of b, ...]."""
    if world_size() == 1:
        return x.detach()
    return _all_gather_rows(x.detach(), _gather_sizes(x.shape[0], x.device))


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """Sum x over ranks, in place (every rank gets identical bytes); no-op in one process."""
    if world_size() > 1:
        torch_dist.all_reduce(x, op=torch_dist.ReduceOp.SUM)
    return x


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum x over ranks, differentiable: the backward all-reduce-sums the gradient, the convention of
    `gather_with_grad` (global batch norm's statistics, mmdist.train.sync_batchnorm); x in one process."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


def mean_across_ranks(metrics: dict) -> dict:
    """Average scalar metrics over data-parallel ranks so every rank reports the same numbers."""
    if world_size() == 1:
        return dict(metrics)
    names = sorted(metrics)
    values = torch.tensor([float(metrics[name]) for name in names], dtype=torch.float64)
    torch_dist.all_reduce(values)
    values /= torch_dist.get_world_size()
    return dict(zip(names, values.tolist()))


def all_gather_objects(value) -> list:
    """Every rank's picklable `value`, in rank order (`[value]` in one process)."""
    if not is_distributed():
        return [value]
    gathered = [None] * world_size()
    torch_dist.all_gather_object(gathered, value)
    return gathered


def broadcast_(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite x, in place, with rank `src`'s copy; no-op in one process."""
    if world_size() > 1:
        torch_dist.broadcast(x, src=src)
    return x


def any_across_ranks(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when `flag` is True on any rank (one all-reduce of a flag on `device`, which
    NCCL needs to be the rank's GPU); the local flag alone in one process."""
    if world_size() == 1:
        return flag
    return bool(all_reduce_sum_(torch.tensor([float(flag)], device=device)).item() > 0)
