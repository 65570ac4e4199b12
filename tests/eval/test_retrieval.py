"""Retrieval metrics against hand-worked cases and naive loops (SPEC Sec. 5, 8.9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdist.eval import (
    chunked_ranks,
    full_video_similarity,
    metrics_from_ranks,
    ranks_from_similarity,
    retrieval_metrics,
    sampled_retrieval,
)
from mmdist.eval.retrieval import similarity_space


def naive_ranks(sim: np.ndarray, positives: np.ndarray) -> list[int]:
    """SPEC Sec. 5 by explicit loops: 1 + the negatives scoring at least the best positive."""
    ranks = []
    for i in range(sim.shape[0]):
        best = max(sim[i, j] for j in range(sim.shape[1]) if positives[i, j])
        ranks.append(1 + sum(1 for j in range(sim.shape[1]) if not positives[i, j] and sim[i, j] >= best))
    return ranks


def test_hand_worked_case():
    sim = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.2], [0.3, 0.3, 0.3]])
    # query 0: its positive is the largest -> 1; query 1: 0.8 beats 0.7 -> 2; query 2: a 3-way tie -> 3
    assert ranks_from_similarity(sim).tolist() == [1, 2, 3]
    metrics = retrieval_metrics(sim)
    assert metrics["R@1"] == pytest.approx(100 / 3)
    assert metrics["R@5"] == metrics["R@10"] == 100.0
    assert metrics["MdR"] == 2.0 and metrics["MnR"] == 2.0


@pytest.mark.parametrize("n", [2, 7, 50])
def test_constant_similarities_rank_every_positive_last(n):
    metrics = retrieval_metrics(np.full((n, n), 0.25))
    assert metrics["R@1"] == 0.0
    assert metrics["MdR"] == n and metrics["MnR"] == n
    assert metrics["R@10"] == (100.0 if n <= 10 else 0.0)


def test_a_positive_tied_with_the_best_one_is_no_competitor():
    positives = np.array([[True, True, False]])
    # two identical narrations of one action tie at the top: a hit, not rank 2
    assert ranks_from_similarity(np.array([[0.9, 0.9, 0.1]]), positives).tolist() == [1]
    # a negative tied with them does count
    assert ranks_from_similarity(np.array([[0.9, 0.9, 0.9]]), positives).tolist() == [2]
    # all similarities equal: 1 + #negatives for every query, whatever the number of positives
    groups = np.array([0, 0, 1, 2, 2, 2])
    mask = groups[:, None] == groups[None, :]
    assert ranks_from_similarity(np.full((6, 6), 0.3), mask).tolist() == (1 + (~mask).sum(axis=1)).tolist()
    # only when every candidate is a positive is the constant model right
    assert retrieval_metrics(np.full((3, 3), 0.3), np.ones((3, 3), dtype=bool))["R@1"] == 100.0


def test_median_of_an_even_count_is_the_mean_of_the_middle_ranks():
    assert metrics_from_ranks([1, 2, 3, 10])["MdR"] == 2.5
    assert metrics_from_ranks([4, 1])["MdR"] == 2.5


def test_positive_mask_uses_the_best_positive_and_counts_ties_against_it():
    sim = np.array([[0.1, 0.9, 0.5, 0.9, 0.2]])
    positives = np.array([[True, False, True, False, False]])
    # best positive 0.5 (candidate 2); the negatives 0.9, 0.9 are >= 0.5
    assert ranks_from_similarity(sim, positives).tolist() == [3]
    # a negative tied with the best positive counts against it
    positives = np.array([[False, True, False, False, False]])
    assert ranks_from_similarity(sim, positives).tolist() == [2]


def test_query_without_positive_is_an_error_naming_the_row():
    sim = np.zeros((3, 3))
    positives = np.eye(3, dtype=bool)
    positives[1, 1] = False
    with pytest.raises(ValueError, match=r"\[1\]"):
        ranks_from_similarity(sim, positives)


def test_nan_similarities_are_rejected():
    sim = np.eye(3)
    sim[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(sim)


def test_matches_naive_loops_with_many_ties():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(30, 40)).astype(np.float64)  # coarse values: ties everywhere
    diagonal = np.zeros((30, 40), dtype=bool)
    diagonal[np.arange(30), np.arange(30)] = True
    assert ranks_from_similarity(sim).tolist() == naive_ranks(sim, diagonal)
    groups_q, groups_c = rng.integers(0, 5, 30), rng.integers(0, 5, 40)
    groups_c[:5] = np.arange(5)  # every group has a candidate
    positives = groups_q[:, None] == groups_c[None, :]
    assert ranks_from_similarity(sim, positives).tolist() == naive_ranks(sim, positives)


@pytest.mark.parametrize("chunk_size", [1, 5, 200])
def test_chunked_group_ranks_match_naive_loops_with_many_ties(chunk_size):
    rng = np.random.default_rng(6)
    # rounded embeddings: few distinct similarities, so positives tie with positives and negatives
    queries = torch.tensor(rng.integers(0, 2, size=(40, 3)), dtype=torch.float32)
    candidates = torch.tensor(rng.integers(0, 2, size=(50, 3)), dtype=torch.float32)
    query_groups, candidate_groups = rng.integers(0, 4, 40), rng.integers(0, 4, 50)
    candidate_groups[:4] = np.arange(4)
    sim = (queries @ candidates.T).numpy()
    positives = query_groups[:, None] == candidate_groups[None, :]
    assert len(np.unique(sim)) <= 4 and (positives.sum(axis=1) > 1).all()
    ranks = chunked_ranks(queries, candidates, chunk_size, 7, query_groups, candidate_groups)  # several column blocks per chunk
    assert ranks.tolist() == naive_ranks(sim, positives)
    diagonal = np.eye(40, 50, dtype=bool)
    assert chunked_ranks(queries, candidates, chunk_size, 7).tolist() == naive_ranks(sim, diagonal)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked(chunk_size):
    rng = np.random.default_rng(1)
    queries = similarity_space(rng.normal(size=(64, 16)), "cosine")
    candidates = similarity_space(rng.normal(size=(64, 16)), "cosine")
    full = (queries @ candidates.T).numpy()
    assert chunked_ranks(queries, candidates, chunk_size, 8192).tolist() == ranks_from_similarity(full).tolist()
    groups = rng.integers(0, 6, 64)
    grouped = chunked_ranks(queries, candidates, chunk_size, 8192, groups, groups)
    assert grouped.tolist() == ranks_from_similarity(full, groups[:, None] == groups[None, :]).tolist()


def test_sampled_retrieval_averages_independent_draws():
    rng = np.random.default_rng(3)
    queries, candidates = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    queries[:, 0] += 3 * candidates[:, 0]  # some signal, so the draws differ
    result = sampled_retrieval(queries, candidates, "cosine", 16, 8192, num_candidates=10, draws=3, seed=5)
    # the same draws, scored on the full matrix of each subset
    draw_rng = np.random.default_rng(5)
    expected = []
    for _ in range(3):
        subset = np.sort(draw_rng.choice(40, size=10, replace=False))
        q, c = similarity_space(queries[subset], "cosine"), similarity_space(candidates[subset], "cosine")
        expected.append(retrieval_metrics((q @ c.T).numpy()))
    for name in ("R@1", "R@5", "R@10", "MdR", "MnR"):
        assert result[name] == pytest.approx(np.mean([m[name] for m in expected]))
    assert result["num_candidates"] == 10 and result["draws"] == 3
    # fewer clips than the pool: every clip, once
    small = sampled_retrieval(queries, candidates, "dot", 16, 8192, num_candidates=1000, draws=5, seed=0)
    assert small["draws"] == 1 and small["num_candidates"] == 40
    assert small["R@1"] == retrieval_metrics(queries @ candidates.T)["R@1"]


def test_full_video_caption_averaging_matches_loops():
    rng = np.random.default_rng(4)
    text, clips = rng.normal(size=(9, 6)), rng.normal(size=(11, 6))
    text_video = np.array(["a", "a", "b", "c", "c", "c", "b", "a", "d"])
    clip_video = np.array(["b", "a", "a", "c", "d", "d", "b", "c", "a", "b", "c"])
    scores, videos = full_video_similarity(text, text_video, clips, clip_video, "cosine", chunk_size=4)
    assert videos.tolist() == ["a", "b", "c", "d"]
    tn = text / np.linalg.norm(text, axis=1, keepdims=True)
    cn = clips / np.linalg.norm(clips, axis=1, keepdims=True)
    for i, query in enumerate(videos):
        for j, target in enumerate(videos):
            per_caption = [max(tn[t] @ cn[c] for c in range(11) if clip_video[c] == target) for t in range(9) if text_video[t] == query]
            assert scores[i, j] == pytest.approx(np.mean(per_caption), abs=1e-6)
