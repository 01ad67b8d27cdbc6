"""Sentence-to-sentence retrieval: ranks equal a brute-force stable sort, the query never
retrieves itself, and protocol rows follow the folds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.metrics.sentence_retrieval import evaluate_sentence_protocol, sentence_ranks


def brute_force_ranks(text_emb: torch.Tensor, caption_image: np.ndarray) -> np.ndarray:
    scores = (text_emb @ text_emb.T).numpy()
    ranks = np.zeros(len(caption_image), dtype=np.int64)
    for query in range(len(caption_image)):
        others = np.array([c for c in range(len(caption_image)) if c != query])
        order = others[np.argsort(-scores[query, others], kind="stable")]
        hits = np.flatnonzero(caption_image[order] == caption_image[query])
        ranks[query] = hits[0] + 1 if hits.size else 0
    return ranks


@pytest.mark.parametrize("chunk", [None, 7])
def test_ranks_equal_a_stable_sort_ties_included(chunk) -> None:
    generator = torch.Generator().manual_seed(0)
    # Coarse values make many exact ties, which the counting must break by index.
    text_emb = torch.randint(-2, 3, (60, 3), generator=generator).float()
    caption_image = np.repeat(np.arange(12), 5)
    caption_image[-1] = 12  # an image with a single caption: nothing to retrieve
    expected = brute_force_ranks(text_emb, caption_image)
    got = sentence_ranks(text_emb, caption_image, chunk=chunk)
    np.testing.assert_array_equal(got, expected)
    assert got[-1] == 0 and (got[:-1] >= 1).all()


def test_identical_captions_of_one_image_rank_first_and_never_the_query_itself() -> None:
    text_emb = torch.eye(4).repeat_interleave(2, dim=0)  # images 0..3, two equal captions each
    ranks = sentence_ranks(text_emb, np.repeat(np.arange(4), 2))
    np.testing.assert_array_equal(ranks, np.ones(8, dtype=np.int64))


def test_protocol_rows_per_fold_and_their_mean() -> None:
    generator = torch.Generator().manual_seed(1)
    caption_image = np.repeat(np.arange(50), 5)
    text_emb = torch.randn(250, 16, generator=generator)
    rows = evaluate_sentence_protocol(text_emb, caption_image, 50, "5fold_1k", fold_size=10)
    assert [row["fold"] for row in rows] == [0, 1, 2, 3, 4, -1]
    assert {row["direction"] for row in rows} == {"t2t"}
    second = sentence_ranks(text_emb[50:100], caption_image[50:100])
    assert rows[1]["r1"] == pytest.approx(100.0 * (second == 1).mean())
    assert rows[-1]["r5"] == pytest.approx(np.mean([row["r5"] for row in rows[:5]]))
    assert rows[0]["rsum"] == pytest.approx(rows[0]["r1"] + rows[0]["r5"] + rows[0]["r10"])
