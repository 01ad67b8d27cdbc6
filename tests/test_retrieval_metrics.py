"""Counting ranks against a literal per-query argsort, recalls against hand-computed values."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from ops.metrics import eval_cli
from ops.metrics.ranking import (
    rank_embeddings,
    rank_scores,
)
from ops.metrics.retrieval_protocols import (
    evaluate_protocol,
    evaluate_protocol_scores,
    evaluate_retrieval_embeddings,
    recall_summary,
    retrieval_metrics,
)


def descending_order(values: np.ndarray) -> np.ndarray:
    """Stable descending order, ties by index."""
    return np.lexsort((np.arange(len(values)), -values.astype(np.float64)))


def reference_t2i(scores: np.ndarray, caption_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranks, top1 = [], []
    for caption in range(scores.shape[1]):
        order = descending_order(scores[:, caption])
        ranks.append(int(np.flatnonzero(order == caption_image[caption])[0]) + 1)
        top1.append(int(order[0]))
    return np.array(ranks), np.array(top1)


def reference_i2t(scores: np.ndarray, caption_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranks, top1 = [], []
    for image in range(scores.shape[0]):
        order = descending_order(scores[image])
        ranks.append(int(np.flatnonzero(caption_image[order] == image)[0]) + 1)
        top1.append(int(order[0]))
    return np.array(ranks), np.array(top1)


def variable_mapping(rng: np.random.Generator, n_images: int, shuffle: bool) -> np.ndarray:
    counts = rng.integers(1, 5, size=n_images)
    mapping = np.repeat(np.arange(n_images), counts)
    return rng.permutation(mapping) if shuffle else mapping


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_matrix_ranks_match_argsort_reference(tied: bool, shuffle: bool, chunk: int) -> None:
    rng = np.random.default_rng(3 + int(tied) + 2 * int(shuffle))
    mapping = variable_mapping(rng, 23, shuffle)
    shape = (23, len(mapping))
    scores = rng.integers(0, 3, size=shape) if tied else rng.standard_normal(shape)
    expected_t2i, expected_t2i_top1 = reference_t2i(scores, mapping)
    expected_i2t, expected_i2t_top1 = reference_i2t(scores, mapping)

    ranks = rank_scores(scores, mapping, chunk)
    np.testing.assert_array_equal(ranks.t2i, expected_t2i)
    np.testing.assert_array_equal(ranks.t2i_top1, expected_t2i_top1)
    np.testing.assert_array_equal(ranks.i2t, expected_i2t)
    np.testing.assert_array_equal(ranks.i2t_top1, expected_i2t_top1)
    # A torch matrix and a block function (swept twice: positives, then counts) agree as well.
    for source, n_images in [
        (torch.from_numpy(scores), None),
        (lambda start, stop: scores[:, start:stop], shape[0]),
    ]:
        ranks = rank_scores(source, mapping, chunk, n_images=n_images)
        np.testing.assert_array_equal(ranks.t2i, expected_t2i)
        np.testing.assert_array_equal(ranks.t2i_top1, expected_t2i_top1)
        np.testing.assert_array_equal(ranks.i2t, expected_i2t)
        np.testing.assert_array_equal(ranks.i2t_top1, expected_i2t_top1)


def test_counts_over_more_than_255_rows_and_columns() -> None:
    # Counts are summed in bytes over groups of 255; cross several groups in both directions.
    rng = np.random.default_rng(4)
    mapping = variable_mapping(rng, 600, shuffle=True)
    scores = rng.integers(0, 4, size=(600, len(mapping)))
    ranks = rank_scores(scores, mapping, chunk=700)
    np.testing.assert_array_equal(ranks.t2i, reference_t2i(scores, mapping)[0])
    np.testing.assert_array_equal(ranks.i2t, reference_i2t(scores, mapping)[0])


def test_tied_scores_with_tiny_band_capacity_fall_back_to_recount(monkeypatch) -> None:
    # Heavy ties overflow the near-tie store; the affected images are recounted exactly.
    monkeypatch.setattr("ops.metrics.ranking.BAND_CAPACITY", 5)
    rng = np.random.default_rng(11)
    mapping = variable_mapping(rng, 17, shuffle=True)
    scores = rng.integers(0, 2, size=(17, len(mapping)))
    ranks = rank_scores(scores, mapping, chunk=4)
    np.testing.assert_array_equal(ranks.i2t, reference_i2t(scores, mapping)[0])
    # The same for computed scores, recounted in the sweep's own blocks.
    images = torch.from_numpy(rng.integers(0, 2, size=(17, 3)).astype(np.float32))
    texts = torch.from_numpy(rng.integers(0, 2, size=(len(mapping), 3)).astype(np.float32))
    ranks = rank_embeddings(images, texts, mapping, chunk=4)
    expected = reference_i2t((images @ texts.T).numpy(), mapping)
    np.testing.assert_array_equal(ranks.i2t, expected[0])
    np.testing.assert_array_equal(ranks.i2t_top1, expected[1])


@pytest.mark.parametrize("similarity", ["dot", "neg_euclidean", "callable"])
def test_embedding_ranks_match_reference_on_the_full_matrix(similarity: str) -> None:
    rng = np.random.default_rng(5)
    mapping = variable_mapping(rng, 30, shuffle=True)
    # Small integers: every product is exact, so ties are real and plentiful.
    images = torch.from_numpy(rng.integers(-1, 2, size=(30, 4)).astype(np.float32))
    texts = torch.from_numpy(rng.integers(-1, 2, size=(len(mapping), 4)).astype(np.float32))
    if similarity == "dot":
        matrix, measure = images @ texts.T, "dot"
    elif similarity == "neg_euclidean":
        matrix, measure = -torch.cdist(images, texts), "neg_euclidean"
    else:

        def measure(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return -(a[:, None, :] - b[None, :, :]).abs().sum(-1)

        matrix = measure(images, texts)
    scores = matrix.numpy()
    ranks = rank_embeddings(images, texts, mapping, chunk=8, similarity=measure)
    np.testing.assert_array_equal(ranks.t2i, reference_t2i(scores, mapping)[0])
    np.testing.assert_array_equal(ranks.i2t, reference_i2t(scores, mapping)[0])
    np.testing.assert_array_equal(ranks.i2t_top1, reference_i2t(scores, mapping)[1])


def test_random_unit_embeddings_match_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 16, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=1)
    mapping = np.repeat(np.arange(40), 5)
    scores = (images @ texts.T).numpy()
    metrics = evaluate_retrieval_embeddings(images, texts, mapping, chunk=32)
    ranks = metrics["ranks"]
    np.testing.assert_array_equal(ranks.t2i, reference_t2i(scores, mapping)[0])
    np.testing.assert_array_equal(ranks.i2t, reference_i2t(scores, mapping)[0])
    assert metrics["i2t"] == recall_summary(reference_i2t(scores, mapping)[0])


def test_recall_summary_hand_computed() -> None:
    summary = recall_summary([1, 2, 6, 11, 3])
    assert summary == {
        "r1": 20.0,
        "r5": 60.0,
        "r10": 80.0,
        "median_rank": 3.0,
        "mean_rank": 4.6,
    }
    # Even count: the median of 2 and 6 is 4; of 1 and 2 it is 1.5, floored to 1.
    assert recall_summary([1, 2, 6, 11])["median_rank"] == 4.0
    assert recall_summary([1, 2])["median_rank"] == 1.0
    both = retrieval_metrics(np.array([1, 1, 20]), np.array([5, 12]))
    # i2t: 2 of 3 within every K → 3 × 66.67; t2i: R@1 0, R@5 50, R@10 50.
    assert both["rsum"] == pytest.approx(300.0)
    with pytest.raises(ValueError, match="1-based"):
        recall_summary([0, 3])


def test_tiny_example_ranks() -> None:
    # 2 images; captions 0,1 belong to image 0, caption 2 to image 1.
    scores = np.array([[0.1, 0.9, 0.5], [0.4, 0.2, 0.5]])
    mapping = np.array([0, 0, 1])
    ranks = rank_scores(scores, mapping)
    # Caption 0: image 1 scores 0.4 > 0.1 → rank 2. Caption 2: tie 0.5 with image 0 (smaller
    # index) → rank 2.
    np.testing.assert_array_equal(ranks.t2i, [2, 1, 2])
    np.testing.assert_array_equal(ranks.t2i_top1, [1, 0, 0])
    # Image 0: caption 1 is first. Image 1: caption 2 (0.5) is first.
    np.testing.assert_array_equal(ranks.i2t, [1, 1])
    np.testing.assert_array_equal(ranks.i2t_top1, [1, 2])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="no caption"):
        rank_scores(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="3 entries"):
        rank_scores(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        rank_scores(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1]))


def test_five_fold_protocol_equals_separate_fold_evaluations() -> None:
    rng = np.random.default_rng(7)
    fold_size, n_images = 6, 31
    images = rng.standard_normal((n_images, 8)).astype(np.float32)
    texts = rng.standard_normal((n_images * 3, 8)).astype(np.float32)
    mapping = np.repeat(np.arange(n_images), 3)
    result = evaluate_protocol(images, texts, mapping, "5fold_1k", fold_size=fold_size, chunk=5)
    folds = [row for row in result.metrics if row["fold"] >= 0]
    assert [row["fold"] for row in folds] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    separate = []
    for fold in range(5):
        first, last = fold * fold_size, (fold + 1) * fold_size
        scores = images[first:last] @ texts[first * 3 : last * 3].T
        fold_mapping = mapping[first * 3 : last * 3] - first
        i2t = reference_i2t(scores, fold_mapping)[0]
        t2i = reference_t2i(scores, fold_mapping)[0]
        separate.append(retrieval_metrics(i2t, t2i))
        for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
            row = next(r for r in folds if r["fold"] == fold and r["direction"] == direction)
            assert row["r5"] == recall_summary(ranks)["r5"]
            assert row["rsum"] == separate[-1]["rsum"]
    means = [row for row in result.metrics if row["fold"] == -1]
    assert [row["direction"] for row in means] == ["i2t", "t2i"]
    for row in means:
        for name in ("r1", "r5", "r10", "median_rank", "mean_rank"):
            expected = np.mean([metrics[row["direction"]][name] for metrics in separate])
            assert row[name] == pytest.approx(expected)
        assert row["rsum"] == pytest.approx(np.mean([m["rsum"] for m in separate]))
    # Per-query rows: 5 folds × (6 image queries + 18 caption queries), global ids.
    assert len(result.ranks) == 5 * (6 + 18)
    fold_two_t2i = result.ranks.query("fold == 2 and direction == 't2i'")
    assert fold_two_t2i["query_id"].tolist() == [str(c) for c in range(36, 54)]
    assert set(fold_two_t2i["top1_id"].astype(int)) <= set(range(12, 18))


def _two_caption_scores(seed: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Random image × caption scores with two captions per image, and each caption's image."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n_images, 4)).astype(np.float32)
    texts = rng.standard_normal((2 * n_images, 4)).astype(np.float32)
    return images @ texts.T, np.repeat(np.arange(n_images), 2)


def test_protocols_on_stored_scores_agree_with_embeddings() -> None:
    scores, mapping = _two_caption_scores(9, 12)
    for protocol in ("1k", "5k", "all"):
        from_scores = evaluate_protocol_scores(scores, mapping, protocol, fold_size=2)
        expected_images = {"1k": 2, "5k": 10, "all": 12}[protocol]
        i2t_rows = from_scores.ranks.query("direction == 'i2t'")
        assert len(i2t_rows) == expected_images
        first = expected_images
        expected = retrieval_metrics(
            reference_i2t(scores[:first, : 2 * first], mapping[: 2 * first])[0],
            reference_t2i(scores[:first, : 2 * first], mapping[: 2 * first])[0],
        )
        assert from_scores.metrics[0]["rsum"] == pytest.approx(expected["rsum"])
        assert from_scores.metrics[0]["fold"] == 0
    with pytest.raises(ValueError, match="needs 15 images"):
        evaluate_protocol_scores(scores, mapping, "5k", fold_size=3)


def test_chance_level_on_random_scores() -> None:
    # METHOD.md: t→i R@K = K/N; i→t R@K ≈ 5K/(5N) for small K: both 1 % at K = 10, N = 1000.
    rng = np.random.default_rng(0)
    n_images = 1000
    scores = rng.standard_normal((n_images, 5 * n_images)).astype(np.float32)
    mapping = np.repeat(np.arange(n_images), 5)
    ranks = rank_scores(scores, mapping)
    t2i = recall_summary(ranks.t2i)
    i2t = recall_summary(ranks.i2t)
    assert 0.5 < t2i["r10"] < 1.5  # sd ≈ 0.14 % over 5000 queries
    assert i2t["r10"] < 2.5  # sd ≈ 0.31 % over 1000 queries
    # Mean rank of a uniform position among 1000: 500.5 (sd of the mean ≈ 4); of the first of
    # 5 positives among 5000: 5001/6 ≈ 833.5 (sd of the mean ≈ 22).
    assert abs(t2i["mean_rank"] - 500.5) < 20
    assert abs(i2t["mean_rank"] - 833.5) < 90


def test_eval_retrieval_command_prints_json(tmp_path, capsys) -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((4, 8))
    path = tmp_path / "scores.npy"
    np.save(path, scores)
    parser = argparse.ArgumentParser()
    eval_cli.add_eval_retrieval_arguments(parser)
    args = parser.parse_args([str(path), "--captions-per-image", "2", "--format", "json"])
    assert eval_cli.run_eval_retrieval(args) == 0
    rows = json.loads(capsys.readouterr().out)
    mapping = np.repeat(np.arange(4), 2)
    expected_i2t = recall_summary(reference_i2t(scores, mapping)[0])
    expected_t2i = recall_summary(reference_t2i(scores, mapping)[0])
    assert [row["direction"] for row in rows] == ["i2t", "t2i"]
    assert rows[0]["protocol"] == "all"
    for row, expected in zip(rows, (expected_i2t, expected_t2i), strict=True):
        for name, value in expected.items():
            assert row[name] == pytest.approx(value)

    ids_path = tmp_path / "ids.npy"
    np.save(ids_path, np.array([0, 0, 0, 1, 1, 2, 3, 3]))
    args = parser.parse_args([str(path), "--caption-image-ids", str(ids_path)])
    assert eval_cli.run_eval_retrieval(args) == 0
    table = capsys.readouterr().out
    assert "i2t" in table and "rsum" in table

    args = parser.parse_args([str(path), "--captions-per-image", "3"])
    assert eval_cli.run_eval_retrieval(args) == 2
    assert "8 caption columns" in capsys.readouterr().err


def test_paper_1k_is_the_whole_test_list_of_the_authors_split() -> None:
    scores, mapping = _two_caption_scores(4, 3)
    paper = evaluate_protocol_scores(scores, mapping, "paper_1k", fold_size=3)
    whole = evaluate_protocol_scores(scores, mapping, "all", fold_size=3)
    assert [row["protocol"] for row in paper.metrics] == ["paper_1k", "paper_1k"]
    expected = retrieval_metrics(
        reference_i2t(scores, mapping)[0], reference_t2i(scores, mapping)[0]
    )
    assert paper.metrics[0]["rsum"] == pytest.approx(expected["rsum"])
    assert paper.metrics[0]["rsum"] == whole.metrics[0]["rsum"]
    # A Karpathy-sized test split is not the authors' list: a clear error, no rows.
    with pytest.raises(ValueError, match="register the dataset with --split paper"):
        evaluate_protocol_scores(scores, mapping, "paper_1k", fold_size=2)
