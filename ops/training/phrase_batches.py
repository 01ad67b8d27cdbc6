"""Batches of the phrase task: whole images, their phrases and all their regions, and the
similarity network's sampled phrase-region pairs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ops.geometry import pairwise_iou
from ops.training.data import Grouping, PhraseRegionData


@dataclass(frozen=True)
class PhraseBatch:
    """Phrases of whole images and all their regions; ``positive``/``negative`` are
    ``(n_phrase, n_region)`` masks over the rows ``phrase_idx`` × ``region_idx``;
    ``phrase_chain`` the phrases' entity chains, when the data has them."""

    phrase_idx: np.ndarray
    region_idx: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    phrase_chain: np.ndarray | None = None


class PhraseBatchSampler:
    """Batches for the phrase task, drawn from ``default_rng([seed, epoch])``.

    Each epoch shuffles the images that have phrases and fills a batch with whole images
    until it holds at least ``phrases_per_batch`` phrases, so a batch has every phrase of its
    images and every region (proposals and ground-truth boxes) of those images. A region is
    positive for a phrase when the data's positive pairs (the graph's) say so; negative when
    not positive, in the same image and at IoU < ``negative_iou`` with the phrase box — and,
    with ``cross_image_negatives``, every region of the other images of the batch (off by
    default: another image may well show the same kind of thing). A short last batch joins
    the one before it.
    """

    def __init__(
        self,
        data: PhraseRegionData,
        phrases_per_batch: int = 200,
        negative_iou: float = 0.3,
        cross_image_negatives: bool = False,
        seed: int = 0,
    ) -> None:
        self.data = data
        self.phrases_per_batch = phrases_per_batch
        self.negative_iou = negative_iou
        self.cross_image_negatives = cross_image_negatives
        self.seed = seed
        self.epoch = 0
        n_images = data.n_images
        self._phrases = Grouping.of(data.phrase_image, n_images)
        self._regions = Grouping.of(data.region_image, n_images)
        self._positives = Grouping.of(data.positive_phrase, data.phrase_image.size)
        self._region_position = np.full(data.region_image.size, -1, dtype=np.int64)
        self._images = np.flatnonzero(self._phrases.count > 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _image_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        images = rng.permutation(self._images)
        if images.size == 0:
            return []
        filled = np.cumsum(self._phrases.count[images])
        cuts = []
        target = self.phrases_per_batch
        for index, total in enumerate(filled):
            if total >= target:
                cuts.append(index + 1)
                target = total + self.phrases_per_batch
        if not cuts or cuts[-1] < images.size:
            tail_phrases = filled[-1] - (filled[cuts[-1] - 1] if cuts else 0)
            if cuts and tail_phrases < self.phrases_per_batch // 2:
                cuts[-1] = images.size
            else:
                cuts.append(images.size)
        return np.split(images, cuts[:-1])

    def __len__(self) -> int:
        return len(self._image_batches())

    def __iter__(self) -> Iterator[PhraseBatch]:
        for images in self._image_batches():
            yield self.batch_of(images)

    def batch_of(self, images: np.ndarray) -> PhraseBatch:
        data = self.data
        phrase_idx = self._phrases.rows_of(images)
        region_idx = self._regions.rows_of(images)
        positive = self._positive_mask(phrase_idx, region_idx)
        same_image = data.phrase_image[phrase_idx][:, None] == data.region_image[region_idx][None]
        iou = pairwise_iou(data.phrase_boxes[phrase_idx], data.region_boxes[region_idx])
        negative = same_image & (iou < self.negative_iou)
        if self.cross_image_negatives:
            negative |= ~same_image
        chain = data.phrase_chain[phrase_idx] if data.phrase_chain.size else None
        return PhraseBatch(phrase_idx, region_idx, positive, negative & ~positive, chain)

    def _positive_mask(self, phrase_idx: np.ndarray, region_idx: np.ndarray) -> np.ndarray:
        pairs = self._positives.rows_of(phrase_idx)
        phrase_pos = np.repeat(np.arange(phrase_idx.size), self._positives.count[phrase_idx])
        self._region_position[region_idx] = np.arange(region_idx.size)
        region_pos = self._region_position[self.data.positive_region[pairs]]
        self._region_position[region_idx] = -1
        positive = np.zeros((phrase_idx.size, region_idx.size), dtype=bool)
        inside = region_pos >= 0
        positive[phrase_pos[inside], region_pos[inside]] = True
        return positive


def _draw_per_row(
    candidates: np.ndarray, quota: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of ``quota[i]`` entries of row i of the mask ``candidates``, drawn
    uniformly without replacement (all of them when the row has fewer)."""
    keys = rng.random(candidates.shape)
    keys[~candidates] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    return np.nonzero(candidates & (rank < quota[:, None]))


def sample_phrase_pairs(
    batch: PhraseBatch,
    negatives_per_positive: int,
    rng: np.random.Generator,
    negative_side: Literal["caption", "image", "mixed"] = "image",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region rows, phrase rows, labels ±1) for the similarity network: every positive pair,
    then ``negatives_per_positive`` negatives per positive pair (p, r), drawn without
    replacement. ``negative_side="image"`` keeps the phrase and takes another region: one of
    p's negative regions; ``"caption"`` keeps the region and takes another phrase: one for
    which r is a negative; ``"mixed"`` picks the side per negative at random. A phrase (region)
    with fewer candidates than its quota gets all of them."""
    pos_phrase, pos_region = np.nonzero(batch.positive)
    if negative_side == "image":
        region_side = np.full(pos_phrase.size, negatives_per_positive)
    elif negative_side == "caption":
        region_side = np.zeros(pos_phrase.size, dtype=np.int64)
    else:
        region_side = rng.binomial(negatives_per_positive, 0.5, size=pos_phrase.size)
    n_phrases, n_regions = batch.positive.shape
    phrase_quota = np.bincount(pos_phrase, weights=region_side, minlength=n_phrases)
    region_quota = np.bincount(
        pos_region, weights=negatives_per_positive - region_side, minlength=n_regions
    )
    neg_phrase, neg_region = [], []
    if phrase_quota.any():
        rows, cols = _draw_per_row(batch.negative, phrase_quota.astype(np.int64), rng)
        neg_phrase.append(rows)
        neg_region.append(cols)
    if region_quota.any():
        rows, cols = _draw_per_row(batch.negative.T, region_quota.astype(np.int64), rng)
        neg_region.append(rows)
        neg_phrase.append(cols)
    neg_p = np.concatenate(neg_phrase) if neg_phrase else np.zeros(0, dtype=np.int64)
    neg_r = np.concatenate(neg_region) if neg_region else np.zeros(0, dtype=np.int64)
    regions = np.concatenate([batch.region_idx[pos_region], batch.region_idx[neg_r]])
    phrases = np.concatenate([batch.phrase_idx[pos_phrase], batch.phrase_idx[neg_p]])
    labels = np.concatenate(
        [np.ones(pos_phrase.size, np.float32), -np.ones(neg_p.size, np.float32)]
    )
    return regions, phrases, labels
