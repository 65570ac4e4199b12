"""The one rank rule of retrieval (SPEC Sec. 5, 8.9), for evaluation and the training loop's in-batch recall.

rank of a query = 1 + #{negatives whose similarity >= that of the query's best positive}

Ties with negatives count against the model (a model whose similarities are all equal ranks every
query 1 + #negatives, never first). Other positives are no competitors, even tied with the best one:
identical narrations of one action tie exactly, and retrieving any of them is a hit. Positives are
the diagonal (clip i's other modality: one positive per query) or a boolean mask (retrieval by action
group, MC3 Sec. 6.2).

Torch only, no plotting or Ray: `mmdist.train.metrics` and `mmdist.eval.retrieval` both import it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

def as_finite_tensor(values, name: str) -> torch.Tensor:
    """`values` as a tensor; NaN or inf is an error naming `name` (NaN compares False and would rank optimistically)."""
    tensor = torch.as_tensor(values)
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} holds NaN or inf values")
    return tensor


def ranks_from_similarity(
    sim, positives=None, offset: int = 0, check_finite: bool = True, column_block: int | None = None
) -> torch.Tensor:
    """Pessimistic 1-based rank of each query's best positive. `sim [n, Nc]` -> long `[n]`.

    column_block: candidates per pass when counting (`eval.rank_block`): bounds the temporaries, not
    the results; None: all at once (the in-batch and validation matrices are small).

    positives: bool `[n, Nc]`, or None for the diagonal shifted by `offset` (query i's positive is
    candidate offset + i: a chunk of rows of a square problem). `check_finite=False` skips the pass over
    `sim` that rejects NaN when the caller has checked the embeddings the similarities come from.
    """
    sim = as_finite_tensor(sim, "sim") if check_finite else torch.as_tensor(sim)
    if sim.dim() != 2:
        raise ValueError(f"sim must be a [queries, candidates] matrix, got shape {list(sim.shape)}")
    rows = torch.arange(sim.shape[0], device=sim.device)
    if positives is None:
        if offset + sim.shape[0] > sim.shape[1]:
            raise ValueError(
                f"diagonal ground truth needs a candidate per query: {offset + sim.shape[0]} queries, "
                f"{sim.shape[1]} candidates; pass `positives`"
            )
        best = sim[rows, rows + offset]  # [n]: read from the same matrix, so the tie test is exact
        # the one positive is among the candidates >= best: #{all >= best} = 1 + #{negatives >= best}
        return count_at_least(sim, best, column_block=column_block)  # [n]
    positives = torch.as_tensor(positives, device=sim.device)
    if positives.shape != sim.shape or positives.dtype != torch.bool:
        raise ValueError(f"positives must be a bool mask of shape {list(sim.shape)}, got {positives.dtype} {list(positives.shape)}")
    lacking = (~positives.any(dim=1)).nonzero().flatten()
    if lacking.numel():
        raise ValueError(f"query row(s) {(lacking + offset).tolist()[:10]} have no positive candidate")
    best = best_positive(sim, positives, column_block)
    return 1 + count_at_least(sim, best, excluding=positives, column_block=column_block)  # [n]


def _column_blocks(width: int, column_block: int | None) -> Iterator[slice]:
    step = column_block or max(width, 1)
    if step < 1:
        raise ValueError(f"eval.rank_block must be >= 1, got {column_block}")
    for start in range(0, width, step):
        yield slice(start, start + step)


def best_positive(sim: torch.Tensor, positives: torch.Tensor, column_block: int | None) -> torch.Tensor:
    """max over the positive candidates of each row: `[n, Nc]`, bool `[n, Nc]` -> `[n]`."""
    best = torch.full((sim.shape[0],), -torch.inf, dtype=sim.dtype, device=sim.device)
    for block in _column_blocks(sim.shape[1], column_block):
        masked = sim[:, block].masked_fill(~positives[:, block], -torch.inf)  # [n, <=column_block]
        best = torch.maximum(best, masked.amax(dim=1))
    return best


def count_at_least(
    sim: torch.Tensor, threshold: torch.Tensor, excluding: torch.Tensor | None = None, column_block: int | None = None
) -> torch.Tensor:
    """#{j : sim[i, j] >= threshold[i]} per row, leaving out the j where `excluding [n, Nc]` is True; long `[n]`.

    By column blocks: counting a bool matrix casts it to an integer copy (4-8 bytes per
    similarity), which over a whole chunk would double its memory; int32 counts are the faster cast.
    """
    counts = torch.zeros(sim.shape[0], dtype=torch.int32, device=sim.device)
    for block in _column_blocks(sim.shape[1], column_block):
        hits = sim[:, block] >= threshold.unsqueeze(1)  # [n, <=column_block]
        if excluding is not None:
            hits &= ~excluding[:, block]
        counts += hits.sum(dim=1, dtype=torch.int32)
    return counts.long()
