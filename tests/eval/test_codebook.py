"""Codebook analysis (CMCM Sec. 4.3) on hand-built code arrays."""

from __future__ import annotations

import numpy as np
import pytest

from mmdist.eval import code_label_counts, codeword_localisation, codeword_table, dominant_modality, label_given_code, usage_summary
from mmdist.eval.codebook import JOINT, UNUSED, label_purity
from mmdist.vq import perplexity


def test_counts_and_conditional_probability():
    codes = np.array([[0, 1, -1], [1, 1, 2], [2, -1, -1]])
    labels = np.array([0, 1, -1])  # the third clip is unlabelled
    counts = code_label_counts(codes, labels, num_labels=2, num_codes=4)
    np.testing.assert_array_equal(counts, [[1, 1, 0, 0], [0, 2, 1, 0]])
    p = label_given_code(counts)
    np.testing.assert_allclose(p, [[1, 1 / 3, 0, 0], [0, 2 / 3, 1, 0]])
    assert label_purity(counts) == pytest.approx(100 * (1 + 2 + 1) / 5)


def test_code_index_outside_the_codebook_is_an_error():
    with pytest.raises(ValueError, match="codebook of 4"):
        code_label_counts(np.array([[4]]), np.array([0]), 1, 4)


def test_jointly_used_share():
    usage = {"video": np.array([95, 50, 0, 0, 10]), "audio": np.array([5, 50, 0, 7, 0])}
    stacked = np.stack(list(usage.values()))
    # 95 %: video's; 50/50: joint; unused; audio only; video only
    assert dominant_modality(stacked, 0.9).tolist() == [0, JOINT, UNUSED, 1, 0]
    summary = usage_summary(usage, 0.9)
    assert summary["active_codes"] == 4 and summary["jointly_used"] == 1
    assert summary["jointly_used_share"] == pytest.approx(0.25)
    assert summary["active_codes_audio"] == 3 and summary["dominated_by_video"] == 2
    assert summary["perplexity"] == pytest.approx(perplexity(np.array([100, 100, 0, 7, 10])))


def test_perplexity_extremes():
    assert perplexity(np.array([5, 5, 5, 5])) == pytest.approx(4)
    assert perplexity(np.array([0, 9, 0])) == pytest.approx(1)


def test_codeword_table_ranks_by_precision_then_occurrence():
    labels = ["cut", "wash", "stir"]
    video = np.array([[10, 1, 6, 3], [0, 1, 0, 3], [0, 8, 2, 0]])  # [labels, codes]
    audio = np.array([[4, 0, 0, 0], [0, 0, 0, 0], [1, 3, 0, 0]])
    table = codeword_table({"video": video, "audio": audio}, labels, "video", rows=10, min_occurrence=5)
    assert [row["code"] for row in table] == [0, 1, 2, 3]  # precisions 100, 80, 75, 50 (code 3: 6 uses)
    first = table[0]
    assert first["top_label"] == "cut" and first["precision"] == 100.0 and first["occurrence"] == 10
    assert table[1]["top_label"] == "stir" and table[1]["second_precision"] == pytest.approx(10.0)
    assert first["audio_occurrence"] == 5 and first["audio_precision"] == pytest.approx(80.0)
    assert table[2]["audio_precision"] is None  # audio never used code 2
    # ties in precision: the more frequent codeword first
    tied = codeword_table({"video": np.array([[5, 9], [0, 0]])}, labels[:2], "video", rows=5, min_occurrence=1)
    assert [row["code"] for row in tied] == [1, 0]


def test_localisation_over_a_time_row_column_grid():
    codes = np.full((2, 2 * 2 * 3), 9)
    codes[0, 0] = 4  # t=0, row 0, column 0
    codes[1, 1 * 6 + 1 * 3 + 2] = 4  # t=1, row 1, column 2
    codes[1, 0] = 4
    frequency = codeword_localisation(codes, (2, 2, 3), 4)
    assert frequency.shape == (2, 2, 3)
    assert frequency[0, 0, 0] == 1.0 and frequency[1, 1, 2] == 0.5 and frequency.sum() == 1.5
    with pytest.raises(ValueError, match="does not match"):
        codeword_localisation(codes, (2, 2, 2), 4)
