"""Two-stage retrieval per protocol fold: each query re-ranks the embedding's top-k of its own
fold, computed block by block, and ranks exactly as the whole fold's score matrix would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.similarity_net import SimilarityNet
from ops.evaluation.single_stage import SimilaritySource, similarity_fold_source
from ops.evaluation.two_stage import TwoStageCandidates, choose_weight, tuning_protocol
from ops.metrics.retrieval_protocols import evaluate_protocol_scores, evaluate_protocol_source
from ops.metrics.score_sources import MatrixSource
from ops.training.data import ImageSentenceData
from ops.training.inputs import ImageSentenceSplit

FOLD = 12
K = 4


def reference_scores(
    embedding_scores: torch.Tensor, rescore: torch.Tensor, k: int, dim: int, weight: float
) -> torch.Tensor:
    """The whole fold's two-stage matrix: along ``dim`` the top-``k`` by ``embedding + weight
    × rescore``, every other candidate below them in the embedding's order."""
    top = embedding_scores.topk(min(k, embedding_scores.shape[dim]), dim=dim).indices
    chosen = embedding_scores.gather(dim, top) + weight * rescore.gather(dim, top)
    gap = (embedding_scores.max() - embedding_scores.min()) + 1.0
    gap = gap + (embedding_scores.gather(dim, top) - chosen).abs().max()
    return (embedding_scores - gap).scatter(dim, top, chosen)


@pytest.fixture(scope="module")
def candidates() -> tuple[TwoStageCandidates, ImageSentenceSplit]:
    torch.manual_seed(0)
    n_images = 5 * FOLD
    net = SimilarityNet(6, 6, hidden_dim=8, embed_dim=8, fusion_dim=8, dropout=0.0).eval()
    image_emb = torch.nn.functional.normalize(torch.randn(n_images, 8), dim=1)
    text_emb = torch.nn.functional.normalize(torch.randn(5 * n_images, 8), dim=1)
    sim_image, sim_text = torch.randn(n_images, 8), torch.randn(5 * n_images, 8)
    caption_image = np.repeat(np.arange(n_images), 5)
    split = ImageSentenceSplit(
        data=ImageSentenceData(
            np.zeros((n_images, 2), np.float32),
            np.zeros((5 * n_images, 2), np.float32),
            caption_image,
        ),
        image_ids=np.array([f"i{n}" for n in range(n_images)]),
        caption_ids=np.array([f"c{n}" for n in range(5 * n_images)]),
    )
    found = TwoStageCandidates(image_emb, text_emb, net, sim_image, sim_text, K, False, 0.0)
    return found, split


def _fold_reference(found: TwoStageCandidates, split, fold: int, weight: float) -> dict:
    images = slice(fold * FOLD, (fold + 1) * FOLD)
    captions = np.flatnonzero(
        (split.data.caption_image >= images.start) & (split.data.caption_image < images.stop)
    )
    first = found.image_emb[images] @ found.text_emb[captions].T
    grid = torch.cartesian_prod(torch.arange(FOLD), torch.arange(len(captions)))
    with torch.no_grad():
        rescore = found.sim_model.score_candidates(
            found.sim_image[images], found.sim_text[captions], grid
        ).view(FOLD, len(captions))
    ranks = {}
    for dim, direction in ((1, "i2t"), (0, "t2i")):
        scores = reference_scores(first, rescore, K, dim, weight)
        result = evaluate_protocol_scores(
            scores, split.data.caption_image[captions] - images.start, "all"
        )
        ranks[direction] = result.ranks.loc[result.ranks["direction"] == direction, "rank"]
    return ranks


@pytest.mark.parametrize("weight", [0.0, 0.7, 25.0])
def test_each_fold_reranks_its_own_top_k_like_the_whole_matrix(candidates, weight) -> None:
    found, split = candidates
    result = found.evaluate(split, "5fold_1k", weight, fold_size=FOLD)
    for fold in range(5):
        expected = _fold_reference(found, split, fold, weight)
        for direction in ("i2t", "t2i"):
            got = result.ranks[
                (result.ranks["fold"] == fold) & (result.ranks["direction"] == direction)
            ]["rank"]
            np.testing.assert_array_equal(got.to_numpy(), expected[direction].to_numpy())


def test_weight_zero_ranks_as_the_embedding_alone(candidates) -> None:
    found, split = candidates
    result = found.evaluate(split, "all", 0.0)
    scores = found.image_emb @ found.text_emb.T
    alone = evaluate_protocol_scores(scores, split.data.caption_image, "all")
    np.testing.assert_array_equal(result.ranks["rank"], alone.ranks["rank"])


def test_fold_candidates_are_kept_per_fold_and_reused(candidates) -> None:
    found, split = candidates
    found.evaluate(split, "5fold_1k", 1.0, fold_size=FOLD)
    kept = dict(found.folds)
    found.evaluate(split, "5fold_1k", 2.0, fold_size=FOLD)
    assert found.folds.keys() >= {(f * FOLD, (f + 1) * FOLD) for f in range(5)}
    assert all(found.folds[key] is kept[key] for key in kept)
    fold = found.folds[(FOLD, 2 * FOLD)]
    assert fold.i2t.shape == (FOLD, K) and fold.t2i.shape == (K, 5 * FOLD)
    assert int(fold.i2t.max()) < 5 * FOLD and int(fold.t2i.max()) < FOLD


def test_a_weight_is_tuned_under_the_protocol_it_is_reported_with(candidates) -> None:
    found, split = candidates
    assert tuning_protocol("5fold_1k", 5 * FOLD, fold_size=FOLD) == "5fold_1k"
    assert tuning_protocol("5k", 5 * FOLD, fold_size=FOLD) == "5k"
    # A validation split too small for the protocol: the weight is tuned on all of it.
    assert tuning_protocol("5fold_1k", 4 * FOLD, fold_size=FOLD) == "all"
    weights = (0.3, 3.0, 30.0)
    choice = choose_weight(found, split, weights, "5fold_1k", fold_size=FOLD)
    assert choice.tuned_protocol == "5fold_1k"
    for weight, rsum in zip(choice.table["weight"], choice.table["rsum"], strict=True):
        rows = pd.DataFrame(found.evaluate(split, "5fold_1k", weight, FOLD).metrics)
        fold_means = rows[rows["fold"] >= 0].groupby("fold")["rsum"].first().mean()
        assert rsum == pytest.approx(fold_means)
    whole = choose_weight(found, split, weights, "all")
    assert whole.tuned_protocol == "all"
    assert not np.allclose(whole.table["rsum"], choice.table["rsum"])


def test_similarity_scores_by_block_rank_as_the_stored_matrix(candidates) -> None:
    found, split = candidates
    model, image_emb, text_emb = found.sim_model, found.sim_image, found.sim_text
    caption_image = split.data.caption_image
    stored = similarity_fold_source(model, image_emb, text_emb, False)
    blocks = SimilaritySource(model, image_emb, text_emb, False)
    assert isinstance(stored, MatrixSource)
    results = [
        evaluate_protocol_source(
            lambda first, last, captions, source=source: source,
            len(split.image_ids),
            caption_image,
            "all",
            chunk=7,
        )
        for source in (stored, blocks)
    ]
    np.testing.assert_array_equal(results[0].ranks["rank"], results[1].ranks["rank"])
    values, tolerance = blocks.positive_estimate(torch.from_numpy(caption_image))
    own = blocks.block(0, blocks.n_captions)[torch.from_numpy(caption_image), torch.arange(300)]
    assert torch.allclose(values, own, atol=tolerance, rtol=0)
