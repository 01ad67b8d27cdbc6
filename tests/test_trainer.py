"""Training loop on small synthetic problems: both tasks, both networks, checkpoints,
early stopping and data validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.losses import logistic_loss
from ops.geometry import pairwise_iou
from ops.training import batch_plans, loss_step
from ops.training import distributed as dist_utils
from ops.training import trainer as trainer_module
from ops.training import validate as validate_module
from ops.training.checkpoint import load_checkpoint
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData, PhraseRegionData
from ops.training.phrase_batches import PhraseBatchSampler, sample_phrase_pairs
from ops.training.placement import DeviceFeatures
from ops.training.trained_model import build_model, load_two_branch
from ops.training.trainer import train
from ops.training.validate import validate
from tests.training_problems import SMALL, make_image_sentence, make_phrase_region

pytestmark = pytest.mark.usefixtures("one_thread")


def random_proposal_accuracy(data: PhraseRegionData) -> float:
    """Expected accuracy (%) of picking a proposal of the phrase's image at random."""
    hits = []
    for phrase in range(data.phrase_image.size):
        mine = (data.region_image == data.phrase_image[phrase]) & ~data.region_is_gt
        iou = pairwise_iou(data.phrase_boxes[phrase : phrase + 1], data.region_boxes[mine])[0]
        hits.append(np.mean(iou >= 0.5))
    return 100.0 * float(np.mean(hits))


# Chance R-sum for 40 images × 5 captions: t2i R@K = K/40, i2t R@K ≈ 1 − C(195,K)/C(200,K).
CHANCE_RSUM_40 = 100 * (1 + 5 + 10) / 40 + 100 * sum(
    1 - np.prod([(195 - i) / (200 - i) for i in range(k)]) for k in (1, 5, 10)
)


@pytest.mark.parametrize("network", ["embedding", "similarity"])
def test_image_sentence_training_lowers_loss_and_beats_chance(network, tmp_path):
    train_data, val_data = make_image_sentence(120, 0), make_image_sentence(40, 1)
    config = TrainConfig(network=network, epochs=4, **SMALL)
    seen = []
    result = train(config, train_data, val_data, tmp_path, on_epoch=seen.append)

    losses = [record.loss for record in result.epochs]
    assert [record.epoch for record in result.epochs] == [1, 2, 3, 4]
    assert seen == result.epochs
    assert losses[-1] < 0.7 * losses[0]
    assert all(record.steps == 600 // 50 for record in result.epochs)
    assert result.best_val_score == max(record.val_score for record in result.epochs)
    assert result.best_val_score > CHANCE_RSUM_40 + 100
    assert set(result.best_val_metrics) >= {"rsum", "i2t_r1", "t2i_r10", "i2t_median_rank"}
    # The decay is applied once per epoch.
    lrs = [record.lr for record in result.epochs]
    assert lrs == pytest.approx([1e-2 * 0.794**e for e in range(4)])
    if network == "embedding":
        assert set(result.epochs[0].loss_terms) == {"sentence", "image", "neighbor"}
    else:
        assert set(result.epochs[0].loss_terms) == {"logistic"}


@pytest.mark.parametrize("network", ["embedding", "similarity"])
def test_phrase_region_training_beats_random_proposals(network, tmp_path):
    train_data, val_data = make_phrase_region(60, 0), make_phrase_region(20, 1)
    config = TrainConfig(task="phrase_region", network=network, epochs=3, **SMALL)
    result = train(config, train_data, val_data, tmp_path)

    chance = random_proposal_accuracy(val_data)
    assert chance < 25
    assert result.best_val_score > chance + 40
    assert result.best_val_metrics["upper_bound"] == 100.0
    assert result.best_val_metrics["n_phrases"] == val_data.phrase_image.size
    assert result.epochs[-1].loss < result.epochs[0].loss


def test_phrase_neighbor_term_trains_on_the_datas_entity_chains(tmp_path):
    data = make_phrase_region(12, 0)
    config = TrainConfig(task="phrase_region", epochs=1, lambda_phrase_neighbor=0.5, **SMALL)
    for batch in batch_plans.BatchPlan(config, data):
        np.testing.assert_array_equal(batch.text_chain, data.phrase_chain[batch.text_rows])
    result = train(config, data, None, tmp_path / "on")
    assert result.epochs[0].loss_terms["phrase_neighbor"] > 0
    off = train(config.model_copy(update={"lambda_phrase_neighbor": 0.0}), data, None, tmp_path)
    assert "phrase_neighbor" not in off.epochs[0].loss_terms
    without_chains = PhraseRegionData(**{**data.__dict__, "phrase_chain": np.zeros(0, np.int64)})
    with pytest.raises(ValueError, match="chain_id"):
        batch_plans.BatchPlan(config, without_chains)


def test_phrase_batches_cover_whole_images_with_iou_masks():
    data = make_phrase_region(10, 3)
    sampler = PhraseBatchSampler(data, phrases_per_batch=16, seed=5)
    sampler.set_epoch(2)
    batches = list(sampler)
    # Whole images (6 phrases each) until 16 are reached; the short tail joins the last batch.
    assert [batch.phrase_idx.size for batch in batches] == [18, 18, 24] and len(sampler) == 3
    seen = np.concatenate([batch.phrase_idx for batch in batches])
    assert sorted(seen.tolist()) == list(range(data.phrase_image.size))
    for batch in batches:
        images = np.unique(data.phrase_image[batch.phrase_idx])
        assert (
            sorted(batch.region_idx.tolist())
            == np.flatnonzero(np.isin(data.region_image, images)).tolist()
        )
        iou = pairwise_iou(data.phrase_boxes[batch.phrase_idx], data.region_boxes[batch.region_idx])
        same = data.phrase_image[batch.phrase_idx][:, None] == data.region_image[batch.region_idx]
        np.testing.assert_array_equal(batch.positive, same & (iou >= 0.6))
        np.testing.assert_array_equal(batch.negative, same & (iou < 0.3))
        # Every phrase's own ground-truth box is among the regions, so it has a positive.
        assert batch.positive.any(1).all()
    # Same (seed, epoch) → same batches; another epoch → another order.
    again = list(sampler)
    assert all(
        np.array_equal(a.phrase_idx, b.phrase_idx) for a, b in zip(batches, again, strict=True)
    )
    sampler.set_epoch(3)
    assert not np.array_equal(next(iter(sampler)).phrase_idx, batches[0].phrase_idx)

    regions, phrases, labels = sample_phrase_pairs(batches[0], 2, np.random.default_rng(0))
    n_pos = int(batches[0].positive.sum())
    assert (labels == 1).sum() == n_pos
    assert 0 < (labels == -1).sum() <= 2 * n_pos
    row_of_region = {r: i for i, r in enumerate(batches[0].region_idx)}
    row_of_phrase = {p: i for i, p in enumerate(batches[0].phrase_idx)}
    for region, phrase, label in zip(regions, phrases, labels, strict=True):
        mask = batches[0].positive if label == 1 else batches[0].negative
        assert mask[row_of_phrase[phrase], row_of_region[region]]


def test_checkpoints_hold_full_state_and_load_with_weights_only(tmp_path):
    train_data, val_data = make_image_sentence(60, 0), make_image_sentence(20, 1)
    config = TrainConfig(epochs=2, **SMALL)
    result = train(config, train_data, val_data, tmp_path)

    for name in ("last.pt", "best.pt"):
        payload = torch.load(tmp_path / name, weights_only=True)
        assert set(payload) >= {
            "model", "optimizer", "scheduler", "epoch", "best_val_score",
            "epochs_without_improvement", "history", "rng", "config",
        }  # fmt: skip
        assert TrainConfig.from_json(payload["config"]) == config
        assert payload["scheduler"]["last_epoch"] == payload["epoch"]
        assert payload["optimizer"]["state"], "Adam moments are saved"
        rng = payload["rng"]["ranks"][0]
        assert rng["torch"].dtype == torch.uint8
        assert rng["numpy"]["keys"].shape == (624,)
        assert len(rng["python"]["internal"]) == 625
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 2 and len(last["history"]) == 2
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch
    assert best["best_val_score"] == result.best_val_score

    trained = load_two_branch(tmp_path / "best.pt", "cpu")
    model, stored_config = trained.network, trained.config
    assert stored_config == config and not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, result.model_state[name])
    features = DeviceFeatures.of(val_data, torch.device("cpu"))
    score, _ = validate(
        model, val_data, features, "embedding", chunk=1024, amp=False, iou_threshold=0.5
    )
    assert score == result.best_val_score


def test_similarity_retrieval_scored_in_blocks_matches_the_stored_matrix(monkeypatch):
    train_data, val_data = make_image_sentence(60, 0), make_image_sentence(30, 1)
    config = TrainConfig(network="similarity", **SMALL)
    torch.manual_seed(0)
    model = build_model(config, train_data.image_dim, train_data.text_dim)
    # A few batch-norm updates so the head's statistics are not the initial ones.
    model.train()
    for _ in range(3):
        model(torch.randn(40, 64), torch.randn(40, 48))
    features = DeviceFeatures.of(val_data, torch.device("cpu"))
    stored = validate(
        model, val_data, features, "similarity", chunk=16, amp=False, iou_threshold=0.5
    )
    monkeypatch.setattr(validate_module, "MAX_STORED_SCORES", 0)
    blocked = validate(
        model, val_data, features, "similarity", chunk=16, amp=False, iou_threshold=0.5
    )
    assert stored == blocked
    assert 0 < stored[0] < 600


def test_early_stopping_stops_after_patience(tmp_path, monkeypatch):
    scores = iter([10.0, 12.0, 11.0, 12.0, 9.0, 30.0, 40.0])
    monkeypatch.setattr(
        trainer_module, "validate", lambda *args, **kwargs: (next(scores), {"rsum": 0.0})
    )
    train_data, val_data = make_image_sentence(60, 0), make_image_sentence(20, 1)
    config = TrainConfig(epochs=7, early_stopping_patience=3, **SMALL)
    result = train(config, train_data, val_data, tmp_path)
    assert [record.val_score for record in result.epochs] == [10.0, 12.0, 11.0, 12.0, 9.0]
    assert [record.improved for record in result.epochs] == [True, True, False, False, False]
    assert result.stopped_early and result.best_epoch == 2 and result.best_val_score == 12.0
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["stopped_early"] is True

    # Training the finished run again does nothing more.
    again = train(config, train_data, val_data, tmp_path)
    assert again.epochs == result.epochs and again.resumed_from_epoch == 5


def test_split_data_is_validated():
    images = np.zeros((3, 4), np.float32)
    texts = np.zeros((6, 2), np.float32)
    with pytest.raises(ValueError, match=r"caption_image\[5\] = 3"):
        ImageSentenceData(images, texts, np.array([0, 0, 1, 1, 2, 3]))
    bad = texts.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="text_features holds NaN or Inf .*row 4"):
        ImageSentenceData(images, bad, np.array([0, 0, 1, 1, 2, 2]))
    data = make_phrase_region(2, 0)
    boxes = data.phrase_boxes.copy()
    boxes[3] = np.nan
    with pytest.raises(ValueError, match="phrase_boxes row 3"):
        PhraseRegionData(**{**data.__dict__, "phrase_boxes": boxes})
    with pytest.raises(ValueError, match="task is image_sentence"):
        train(TrainConfig(**SMALL), data, None, Path("/nonexistent"))


def test_similarity_batches_embed_each_item_once_with_the_loss_of_the_pairs() -> None:
    data = make_phrase_region(12, 0)
    config = TrainConfig(task="phrase_region", network="similarity", **SMALL)
    model = build_model(config, data.image_dim, data.text_dim).eval()
    plan = batch_plans.BatchPlan(config, data)
    plan.set_epoch(1)
    batch = next(iter(plan))
    assert loss_step._has_repeated_items(batch)
    embedded: list[int] = []
    hook = model.image_branch.register_forward_hook(
        lambda module, inputs, output: embedded.append(inputs[0].shape[0])
    )
    features = DeviceFeatures.of(data, torch.device("cpu"))
    with torch.no_grad():
        loss, _ = loss_step._loss(
            model, features, batch, config, dist_utils.DistContext(), torch.device("cpu")
        )
        hook.remove()
        logits = model(
            features.image_features[torch.from_numpy(batch.image_rows)],
            features.text_features[torch.from_numpy(batch.text_rows)],
        )
    # Each region once, not once per pair; in eval mode the loss is the pairs' loss exactly.
    assert embedded == [np.unique(batch.image_rows).size] and embedded[0] < batch.image_rows.size
    expected = logistic_loss(logits, torch.from_numpy(batch.labels))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("side", ["caption", "image", "mixed"])
def test_phrase_negative_side_reaches_the_pair_sampler(side: str) -> None:
    data = make_phrase_region(12, 0)
    config = TrainConfig(task="phrase_region", network="similarity", negative_side=side, **SMALL)
    plan = batch_plans.BatchPlan(config, data)
    plan.set_epoch(1)
    step = next(iter(plan))
    phrase_batch = next(iter(plan.sampler))  # the same epoch's first batch, with its masks
    row_of_region = {r: i for i, r in enumerate(phrase_batch.region_idx)}
    row_of_phrase = {p: i for i, p in enumerate(phrase_batch.phrase_idx)}
    positive = step.labels == 1
    pos_phrases, pos_regions = set(step.text_rows[positive]), set(step.image_rows[positive])
    kept_phrase = kept_region = 0
    for region, phrase, label in zip(step.image_rows, step.text_rows, step.labels, strict=True):
        mask = phrase_batch.positive if label == 1 else phrase_batch.negative
        assert mask[row_of_phrase[phrase], row_of_region[region]]
        if label == -1:
            kept_phrase += phrase in pos_phrases
            kept_region += region in pos_regions
    negatives = int((~positive).sum())
    # Two per positive, fewer where a phrase (region) has fewer candidates than its quota.
    assert int(positive.sum()) < negatives <= 2 * int(positive.sum())
    if side == "image":  # the phrase stays, another region
        assert kept_phrase == negatives
    elif side == "caption":  # the region stays, another phrase
        assert kept_region == negatives
    else:
        assert 0 < kept_phrase < negatives or 0 < kept_region < negatives
    assert TrainConfig(task="phrase_region").negative_side == "image"
    assert TrainConfig(task="image_sentence").negative_side == "caption"
