"""Validation scores: retrieval R-sum (image–sentence) and localization accuracy (phrases).

Both run the network in eval mode, embed each item once in chunks, and score in bounded
blocks. Scores are percentages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ops.device import autocast_context
from ops.geometry import matched_iou
from ops.metrics.ranking import rank_scores
from ops.metrics.retrieval_protocols import evaluate_retrieval_embeddings, retrieval_metrics
from ops.training.data import Grouping, ImageSentenceData, PhraseRegionData, SplitData
from ops.training.placement import DeviceFeatures

# The similarity network's full validation score matrix is kept when it has at most this many
# entries; larger splits are scored block by block on the fly (twice, but in bounded memory).
MAX_STORED_SCORES = 1 << 27
# (phrase, candidate region) pairs scored per block in localization.
PAIRS_PER_BLOCK = 1 << 16


@torch.no_grad()
def embed_rows(
    branch: Callable[[torch.Tensor], torch.Tensor],
    features: torch.Tensor,
    chunk: int,
    amp: bool,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """``branch`` applied to ``features`` (or to its ``rows``) in chunks; float32 output."""
    parts = []
    n_rows = features.shape[0] if rows is None else rows.shape[0]
    for start in range(0, n_rows, chunk):
        block = (
            features[start : start + chunk]
            if rows is None
            else features[rows[start : start + chunk]]
        )
        with autocast_context(features.device, amp):
            parts.append(branch(block).float())
    if not parts:
        raise ValueError("no rows to embed")
    return torch.cat(parts)


def flatten_retrieval(metrics: dict[str, object]) -> dict[str, float]:
    """``{"i2t_r1": …, "t2i_median_rank": …, "rsum": …}`` from :func:`retrieval_metrics`."""
    flat: dict[str, float] = {"rsum": float(metrics["rsum"])}  # type: ignore[arg-type]
    for direction in ("i2t", "t2i"):
        for key, value in metrics[direction].items():  # type: ignore[union-attr]
            flat[f"{direction}_{key}"] = float(value)
    return flat


@torch.no_grad()
def validate_image_sentence(
    model: nn.Module,
    data: ImageSentenceData,
    features: DeviceFeatures,
    network: str,
    chunk: int = 1024,
    amp: bool = True,
) -> tuple[float, dict[str, float]]:
    """(R-sum, flat retrieval metrics) on a split. The embedding network ranks by dot product,
    which orders unit vectors exactly as Euclidean distance does."""
    was_training = model.training
    model.eval()
    try:
        device = features.image_features.device
        image_emb = embed_rows(model.embed_image, features.image_features, chunk, amp)
        text_emb = embed_rows(model.embed_text, features.text_features, chunk, amp)
        if network == "embedding":
            metrics = evaluate_retrieval_embeddings(
                image_emb, text_emb, data.caption_image, device=device
            )
        else:
            metrics = _similarity_retrieval(model, image_emb, text_emb, data, chunk, amp)
    finally:
        model.train(was_training)
    flat = flatten_retrieval(metrics)
    return flat["rsum"], flat


def _similarity_retrieval(
    model: nn.Module,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    data: ImageSentenceData,
    chunk: int,
    amp: bool,
) -> dict[str, object]:
    device = image_emb.device
    rows = max(1, (PAIRS_PER_BLOCK * 4) // max(1, text_emb.shape[0]))

    def score_block(start: int, stop: int) -> torch.Tensor:
        with autocast_context(device, amp):
            return model.score_embedding_matrix(image_emb, text_emb[start:stop], rows).float()

    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    if n_images * n_texts <= MAX_STORED_SCORES:
        scores = score_block(0, n_texts)
        ranks = rank_scores(scores, data.caption_image, device=device)
    else:
        ranks = rank_scores(
            score_block, data.caption_image, chunk, n_images=n_images, device=device
        )
    assert ranks.i2t is not None and ranks.t2i is not None
    return retrieval_metrics(ranks.i2t, ranks.t2i)


# ---------------------------------------------------------------------------------------------
# Phrase localization


@dataclass(frozen=True)
class PhrasePredictions:
    """Per phrase: the chosen proposal row (−1 when its image has none), its score, its IoU
    with the phrase box, and whether any proposal of the image reaches the IoU threshold."""

    chosen_region: np.ndarray
    chosen_score: np.ndarray
    chosen_iou: np.ndarray
    reachable: np.ndarray
    iou_threshold: float

    def accuracy(self) -> float:
        if self.chosen_iou.size == 0:
            return 0.0
        return float(100.0 * np.mean(self.chosen_iou >= self.iou_threshold))

    def upper_bound(self) -> float:
        return float(100.0 * np.mean(self.reachable)) if self.reachable.size else 0.0


@torch.no_grad()
def predict_phrase_regions(
    model: nn.Module,
    data: PhraseRegionData,
    features: DeviceFeatures,
    network: str,
    chunk: int,
    amp: bool,
    iou_threshold: float,
) -> PhrasePredictions:
    """For each phrase, score every proposal (not ground-truth region) of its image and take
    the best: highest dot product of unit vectors (embedding network) or logit (similarity)."""
    was_training = model.training
    model.eval()
    try:
        return _predict(model, data, features, network, chunk, amp, iou_threshold)
    finally:
        model.train(was_training)


def _predict(
    model: nn.Module,
    data: PhraseRegionData,
    features: DeviceFeatures,
    network: str,
    chunk: int,
    amp: bool,
    iou_threshold: float,
) -> PhrasePredictions:
    device = features.image_features.device
    proposals = np.flatnonzero(~data.region_is_gt)
    n_phrases = data.phrase_features.shape[0]
    if proposals.size == 0 or n_phrases == 0:
        empty = np.zeros(n_phrases)
        return PhrasePredictions(
            np.full(n_phrases, -1, dtype=np.int64),
            empty - np.inf,
            empty,
            empty.astype(bool),
            iou_threshold,
        )
    proposal_t = torch.from_numpy(proposals).to(device)
    region_emb = embed_rows(model.embed_image, features.image_features, chunk, amp, proposal_t)
    phrase_emb = embed_rows(model.embed_text, features.text_features, chunk, amp)
    grouping = Grouping.of(data.region_image[proposals], data.n_images)
    # Candidate matrix: phrase p's image owns proposal rows order[start : start + count].
    width = max(1, int(grouping.count.max()))
    order = torch.from_numpy(grouping.order).to(device)
    start = torch.from_numpy(grouping.start[data.phrase_image]).to(device)
    count = torch.from_numpy(grouping.count[data.phrase_image]).to(device)
    region_boxes = torch.from_numpy(data.region_boxes[proposals]).to(device)
    phrase_boxes = torch.from_numpy(data.phrase_boxes).to(device)
    offsets = torch.arange(width, device=device)
    chosen, best_scores, chosen_iou, reachable = [], [], [], []
    rows = max(1, PAIRS_PER_BLOCK // width)
    for first in range(0, n_phrases, rows):
        last = min(first + rows, n_phrases)
        valid = offsets[None, :] < count[first:last, None]
        slot = (start[first:last, None] + offsets[None, :]).clamp_max(max(order.numel() - 1, 0))
        candidates = torch.where(valid, order[slot], torch.zeros_like(slot))
        scores = _candidate_scores(
            model, network, region_emb, phrase_emb, candidates, valid, first, amp
        )
        scores = scores.masked_fill(~valid, float("-inf"))
        best, best_slot = scores.max(1)
        picked = candidates.gather(1, best_slot[:, None]).squeeze(1)
        has_candidate = valid.any(1)
        iou_all = matched_iou(region_boxes[candidates], phrase_boxes[first:last, None, :])
        iou_all = iou_all.masked_fill(~valid, 0.0)
        chosen.append(torch.where(has_candidate, proposal_t[picked], torch.full_like(picked, -1)))
        best_scores.append(best)
        chosen_iou.append(
            torch.where(has_candidate, iou_all.gather(1, best_slot[:, None])[:, 0], 0)
        )
        reachable.append((iou_all >= iou_threshold).any(1))
    return PhrasePredictions(
        torch.cat(chosen).cpu().numpy(),
        torch.cat(best_scores).cpu().numpy(),
        torch.cat(chosen_iou).cpu().numpy(),
        torch.cat(reachable).cpu().numpy(),
        iou_threshold,
    )


def _candidate_scores(
    model: nn.Module,
    network: str,
    region_emb: torch.Tensor,
    phrase_emb: torch.Tensor,
    candidates: torch.Tensor,
    valid: torch.Tensor,
    first: int,
    amp: bool,
) -> torch.Tensor:
    phrases = phrase_emb[first : first + candidates.shape[0]]
    if network == "embedding":
        return (region_emb[candidates] * phrases[:, None, :]).sum(-1)
    phrase_rows = torch.arange(first, first + candidates.shape[0], device=candidates.device)
    pairs = torch.stack([candidates[valid], phrase_rows[:, None].expand_as(candidates)[valid]], 1)
    scores = torch.full(candidates.shape, float("-inf"), device=candidates.device)
    with autocast_context(candidates.device, amp):
        logits = model.score_candidates(region_emb, phrase_emb, pairs)
    scores[valid] = logits.float()
    return scores


def validate_phrase_region(
    model: nn.Module,
    data: PhraseRegionData,
    features: DeviceFeatures,
    network: str,
    chunk: int,
    amp: bool,
    iou_threshold: float,
) -> tuple[float, dict[str, float]]:
    """(accuracy %, {accuracy, upper_bound, n_phrases}) over the split's phrases."""
    predictions = predict_phrase_regions(model, data, features, network, chunk, amp, iou_threshold)
    accuracy = predictions.accuracy()
    return accuracy, {
        "accuracy": accuracy,
        "upper_bound": predictions.upper_bound(),
        "n_phrases": float(predictions.chosen_iou.size),
    }


def validate(
    model: nn.Module,
    data: SplitData,
    features: DeviceFeatures,
    network: str,
    chunk: int,
    amp: bool,
    iou_threshold: float,
) -> tuple[float, dict[str, float]]:
    """The validation score of the task of ``data`` and its metrics; phrases count as
    localized at ``iou_threshold`` (the run's ``localization_iou``)."""
    if isinstance(data, ImageSentenceData):
        return validate_image_sentence(model, data, features, network, chunk, amp)
    return validate_phrase_region(model, data, features, network, chunk, amp, iou_threshold)
