"""Cross-modal retrieval: ranks with pessimistic ties, scored in chunks (SPEC Sec. 5, 8.9).

Rank of a query = 1 + #{negatives whose similarity >= that of its best-ranked positive}
(`mmdist.ranks`): ties with negatives count against the model, so a model whose similarities are all
equal ranks every query 1 + #negatives, never first; another positive tied with the best one is no
competitor. Positives are the diagonal (clip i's other modality), or a group: any candidate sharing
the query's action label (MC3 Sec. 6.2: "a retrieval is correct if ... B and A belong to the same
action group").

Large sets are scored `chunk_size` query rows at a time: at most `chunk_size x Nc` similarities
are ever held, whatever Nq.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mmdist.ranks import as_finite_tensor, ranks_from_similarity

RECALL_AT = (1, 5, 10)


def metrics_from_ranks(ranks) -> dict[str, float]:
    """R@1/5/10 in percent, MdR (numpy's median: mean of the two middle ranks for an even count), MnR."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("no query to score (empty rank list)")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    return metrics


def retrieval_metrics(sim, positives=None) -> dict[str, float]:
    """SPEC Sec. 5. `sim [Nq, Nc]` with ground truth on the diagonal, or `positives` bool `[Nq, Nc]`."""
    return metrics_from_ranks(ranks_from_similarity(sim, positives).cpu().numpy())


def similarity_space(embeddings: np.ndarray, similarity: str) -> torch.Tensor:
    """Rows whose dot products are the configured similarity: `cosine` L2-normalises, `dot` keeps them."""
    tensor = as_finite_tensor(np.ascontiguousarray(embeddings, dtype=np.float32), "embeddings")
    if similarity == "cosine":
        return torch.nn.functional.normalize(tensor, dim=-1)
    if similarity == "dot":
        return tensor
    raise ValueError(f"eval.similarity must be 'cosine' or 'dot', got {similarity!r}")


def similarity_chunks(queries: torch.Tensor, candidates: torch.Tensor, chunk_size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first query row, `[<=chunk_size, Nc]` similarities) for consecutive blocks of query rows."""
    if chunk_size < 1:
        raise ValueError(f"eval.chunk_size must be >= 1, got {chunk_size}")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, candidates {candidates.shape[1]}")
    candidates_t = candidates.T.contiguous()  # [D, Nc]
    for start in range(0, queries.shape[0], chunk_size):
        yield start, queries[start : start + chunk_size] @ candidates_t  # [n, Nc]


def chunked_ranks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    chunk_size: int,
    rank_block: int,
    query_groups: np.ndarray | None = None,
    candidate_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Ranks of `retrieval_metrics` for `queries [Nq, D]` against `candidates [Nc, D]`, chunk by chunk
    (`eval.chunk_size` query rows), each chunk counted `eval.rank_block` candidates at a time.

    Without groups the ground truth is the diagonal (query i's positive is candidate i, Nq <= Nc);
    with integer `query_groups [Nq]`
    and `candidate_groups [Nc]` a candidate is positive when its group equals the query's.
    """
    if (query_groups is None) != (candidate_groups is None):
        raise ValueError("pass both query_groups and candidate_groups, or neither")
    if query_groups is None and queries.shape[0] > candidates.shape[0]:
        raise ValueError(f"diagonal ground truth needs a candidate per query: {queries.shape[0]} queries, {candidates.shape[0]} candidates")
    for name, tensor in (("queries", queries), ("candidates", candidates)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} hold NaN or inf values")
    if query_groups is not None:
        query_groups = torch.as_tensor(np.asarray(query_groups, dtype=np.int64), device=queries.device)
        candidate_groups = torch.as_tensor(np.asarray(candidate_groups, dtype=np.int64), device=queries.device)
    ranks = []
    for start, sim in similarity_chunks(queries, candidates, chunk_size):
        if query_groups is None:
            ranks.append(ranks_from_similarity(sim, offset=start, check_finite=False, column_block=rank_block))
        else:
            positives = query_groups[start : start + sim.shape[0], None] == candidate_groups[None, :]  # [n, Nc]
            ranks.append(ranks_from_similarity(sim, positives, offset=start, check_finite=False, column_block=rank_block))
        del sim  # before the next chunk is computed: one chunk of similarities alive, not two
    return torch.cat(ranks).cpu().numpy()


def sampled_retrieval(
    queries: np.ndarray,
    candidates: np.ndarray,
    similarity: str,
    chunk_size: int,
    rank_block: int,
    num_candidates: int,
    draws: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Paired retrieval (row i of `queries` matches row i of `candidates`) under the "1k" protocol.

    With more than `num_candidates` clips, draw `num_candidates` clips at random `draws` times
    (queries and candidates are the same clips) and average each metric over the draws; with
    fewer, score every clip once. `groups [N]` (ints) switches to positives by group.
    """
    if len(queries) != len(candidates):
        raise ValueError(f"paired retrieval needs as many queries as candidates: {len(queries)} vs {len(candidates)}")
    if num_candidates < 2 or draws < 1:
        raise ValueError(f"eval.retrieval.num_candidates must be >= 2 and draws >= 1, got {num_candidates}, {draws}")
    count = len(queries)
    rng = np.random.default_rng(seed)
    subsets = [np.arange(count)] if count <= num_candidates else [
        np.sort(rng.choice(count, size=num_candidates, replace=False)) for _ in range(draws)
    ]
    per_draw = []
    for subset in subsets:
        q, c = similarity_space(queries[subset], similarity), similarity_space(candidates[subset], similarity)
        g = None if groups is None else groups[subset]
        per_draw.append(metrics_from_ranks(chunked_ranks(q, c, chunk_size, rank_block, g, g)))
    averaged = {name: float(np.mean([m[name] for m in per_draw])) for name in per_draw[0]}
    averaged.update(num_queries=len(subsets[0]), num_candidates=len(subsets[0]), draws=len(subsets))
    return averaged


def full_video_similarity(
    text: np.ndarray, text_video: np.ndarray, clips: np.ndarray, clip_video: np.ndarray, similarity: str, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Caption averaging (MCN Sec. 4.5): score(video query set Q, video V) = mean over captions q in Q
    of max over clips c of V of sim(q, c). Returns `[S, S]` scores (rows: the caption sets of each
    video, columns: videos, both in the order of the returned video ids) and the ids."""
    videos = np.unique(np.concatenate([np.asarray(text_video), np.asarray(clip_video)]))
    if len(np.setdiff1d(videos, np.unique(clip_video))) or len(np.setdiff1d(videos, np.unique(text_video))):
        raise ValueError("every video needs at least one caption and one clip for full-video retrieval")
    text_index, clip_index = np.searchsorted(videos, text_video), np.searchsorted(videos, clip_video)
    queries, candidates = similarity_space(text, similarity), similarity_space(clips, similarity)
    clip_owner = torch.as_tensor(clip_index)
    best = torch.empty(len(text), len(videos))  # [Nt, S]: best clip of each video for each caption
    for start, sim in similarity_chunks(queries, candidates, chunk_size):
        per_video = torch.full((sim.shape[0], len(videos)), -torch.inf)
        per_video.scatter_reduce_(1, clip_owner.expand(sim.shape[0], -1), sim, reduce="amax")  # [n, S]
        best[start : start + sim.shape[0]] = per_video
        del sim  # one chunk of similarities alive at a time
    # mean over the captions of each query video: [S, Nt] one-hot averaging matrix times [Nt, S]
    owner = torch.zeros(len(videos), len(text))
    owner[torch.as_tensor(text_index), torch.arange(len(text))] = 1.0
    scores = (owner / owner.sum(dim=1, keepdim=True)) @ best  # [S, S]
    return scores.numpy(), videos
