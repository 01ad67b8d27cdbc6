"""Batch samplers over index arrays (no features, no I/O).

All samplers take ``caption_image``: for each caption (or phrase) the index of its image (or
region group), and draw from ``numpy.random.default_rng([seed, epoch])`` so a given
(seed, epoch) always yields the same batches and ``set_epoch`` moves to a new draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Rows of a ranking batch. Images are unique; ``caption_to_batch_image[j]`` is the row in
    ``image_idx`` of the image of caption ``caption_idx[j]``."""

    image_idx: np.ndarray
    caption_idx: np.ndarray
    caption_to_batch_image: np.ndarray
    # (2, E) batch caption positions (anchor, neighbor) of extra neighborhood pairs, beyond
    # "same image"; None when the sampler has no extra neighborhoods.
    extra_neighbors: np.ndarray | None = None


@dataclass(frozen=True)
class PairBatch:
    """Row-aligned (image, caption) pairs with labels +1 (matching) / −1 (not matching)."""

    image_idx: np.ndarray
    caption_idx: np.ndarray
    labels: np.ndarray


class _EpochSampler:
    def __init__(self, caption_image: np.ndarray, batch_size: int, seed: int, drop_last: bool):
        caption_image = np.asarray(caption_image)
        if caption_image.ndim != 1 or not np.issubdtype(caption_image.dtype, np.integer):
            raise ValueError(
                f"caption_image must be a 1-D integer array, got {caption_image.dtype} "
                f"{caption_image.shape}"
            )
        if caption_image.size and caption_image.min() < 0:
            raise ValueError("caption_image holds a negative image index")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.caption_image = caption_image.astype(np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def n_captions(self) -> int:
        return int(self.caption_image.shape[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n_captions, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def _anchor_batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Each caption once, shuffled, in batches of ``batch_size`` (tail per ``drop_last``)."""
        order = rng.permutation(self.n_captions)
        for index in range(len(self)):
            yield order[index * self.batch_size : (index + 1) * self.batch_size]

    def _batch_of(self, captions: np.ndarray) -> Batch:
        caption_idx = np.unique(captions)
        images = self.caption_image[caption_idx]
        image_idx, caption_to_batch_image = np.unique(images, return_inverse=True)
        return Batch(image_idx, caption_idx, caption_to_batch_image.astype(np.int64))


class NeighborhoodSampler(_EpochSampler):
    """Neighborhood sampling: each batch is ``batch_images`` anchor captions, their images, and
    ``sentences_per_image − 1`` more captions of each anchor's image.

    Each epoch shuffles all captions and uses each once as an anchor (the last partial batch is
    dropped unless ``drop_last=False``). Extra captions are distinct from the anchor and from
    each other while the image has enough captions (an image with fewer contributes all of
    them). Two anchors of one image share one image row, and a caption drawn twice appears once,
    so a batch may hold fewer than ``batch_images`` images.

    ``extra_neighbors = (start, rows)`` (CSR: caption j's extra neighbors are
    ``rows[start[j] : start[j + 1]]``, e.g. its nearest captions by feature) adds one random
    extra neighbor of each anchor that has any, with its image, and lists every (caption,
    extra neighbor) pair of the batch in ``Batch.extra_neighbors``.
    """

    def __init__(
        self,
        caption_image: np.ndarray,
        batch_images: int = 500,
        sentences_per_image: int = 2,
        seed: int = 0,
        drop_last: bool = True,
        extra_neighbors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        super().__init__(caption_image, batch_images, seed, drop_last)
        if sentences_per_image < 1:
            raise ValueError(f"sentences_per_image must be >= 1, got {sentences_per_image}")
        self.sentences_per_image = sentences_per_image
        self.extra_neighbors = None
        if extra_neighbors is not None:
            start, rows = (np.asarray(a, dtype=np.int64) for a in extra_neighbors)
            if start.shape != (self.n_captions + 1,) or start[-1] != rows.size:
                raise ValueError(
                    f"extra_neighbors must be a CSR pair over {self.n_captions} captions"
                )
            self.extra_neighbors = (start, rows)
        # Captions grouped by image: image i owns by_image[start[i] : start[i] + count[i]].
        self._by_image = np.argsort(self.caption_image, kind="stable")
        n_images = int(self.caption_image.max()) + 1 if self.n_captions else 0
        self._count = np.bincount(self.caption_image, minlength=n_images)
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]]).astype(np.int64)
        self._rank = np.empty(self.n_captions, dtype=np.int64)
        self._rank[self._by_image] = (
            np.arange(self.n_captions) - self._start[self.caption_image[self._by_image]]
        )

    def __iter__(self) -> Iterator[Batch]:
        rng = self._rng()
        for anchors in self._anchor_batches(rng):
            captions = [anchors, self._companions(anchors, rng)]
            if self.extra_neighbors is None:
                yield self._batch_of(np.concatenate(captions))
                continue
            captions.append(self._extra_neighbor_draw(anchors, rng))
            batch = self._batch_of(np.concatenate(captions))
            yield Batch(
                batch.image_idx,
                batch.caption_idx,
                batch.caption_to_batch_image,
                extra_neighbors=self._extra_pairs(batch.caption_idx),
            )

    def _extra_neighbor_draw(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random extra neighbor of each anchor that has one."""
        assert self.extra_neighbors is not None
        start, rows = self.extra_neighbors
        count = start[anchors + 1] - start[anchors]
        has = count > 0
        offset = (rng.random(anchors.size) * np.maximum(count, 1)).astype(np.int64)
        return rows[start[anchors[has]] + offset[has]]

    def _extra_pairs(self, caption_idx: np.ndarray) -> np.ndarray:
        """(2, E) batch positions of every (caption, extra neighbor) pair within the batch."""
        assert self.extra_neighbors is not None
        start, rows = self.extra_neighbors
        count = start[caption_idx + 1] - start[caption_idx]
        anchor_pos = np.repeat(np.arange(caption_idx.size), count)
        offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        neighbor = rows[np.repeat(start[caption_idx], count) + offsets]
        # caption_idx is sorted (np.unique), so a neighbor's position is found by bisection.
        position = np.searchsorted(caption_idx, neighbor)
        inside = position < caption_idx.size
        inside[inside] = caption_idx[position[inside]] == neighbor[inside]
        return np.stack([anchor_pos[inside], position[inside]])

    def _companions(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Up to ``sentences_per_image − 1`` distinct other captions of each anchor's image."""
        wanted = self.sentences_per_image - 1
        if wanted == 0 or anchors.size == 0:
            return anchors[:0]
        images = self.caption_image[anchors]
        others = self._count[images] - 1  # captions of the image besides the anchor
        width = int(others.max())
        if width == 0:
            return anchors[:0]
        # A random permutation of the offsets 1..others per anchor: sort random keys with the
        # impossible offsets pushed to the end, keep the first `wanted`.
        keys = rng.random((anchors.size, width))
        keys[np.arange(width)[None, :] >= others[:, None]] = np.inf
        offsets = np.argsort(keys, axis=1)[:, :wanted] + 1
        keep = offsets <= others[:, None]
        count = self._count[images][:, None]
        position = (self._rank[anchors][:, None] + offsets) % count
        picked = self._by_image[self._start[images][:, None] + position]
        return picked[keep]


class TripletSampler(_EpochSampler):
    """Plain triplet sampling for the ablation: ``batch_size`` random captions per batch (each
    caption once per epoch) with their images, deduplicated like :class:`NeighborhoodSampler`.
    """

    def __init__(
        self,
        caption_image: np.ndarray,
        batch_size: int = 500,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(caption_image, batch_size, seed, drop_last)

    def __iter__(self) -> Iterator[Batch]:
        for anchors in self._anchor_batches(self._rng()):
            yield self._batch_of(anchors)


class PairSampler(_EpochSampler):
    """Pairs for the similarity network: each caption's positive pair (once per epoch, shuffled)
    plus ``negatives_per_positive`` pairs that do not match.

    A negative keeps the positive's image and takes a random caption of another image
    (``negative_side="caption"``), keeps the caption and takes another image (``"image"``), or
    picks either side at random per negative (``"mixed"``). Images are drawn among those that
    have captions. Each batch lists its positives first, then the negatives.
    """

    def __init__(
        self,
        caption_image: np.ndarray,
        batch_positives: int = 200,
        negatives_per_positive: int = 2,
        seed: int = 0,
        drop_last: bool = True,
        negative_side: Literal["caption", "image", "mixed"] = "caption",
    ) -> None:
        super().__init__(caption_image, batch_positives, seed, drop_last)
        if negatives_per_positive < 0:
            raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
        if negative_side not in ("caption", "image", "mixed"):
            raise ValueError(f"negative_side must be caption, image or mixed: {negative_side!r}")
        self._images = np.unique(self.caption_image)
        if negatives_per_positive and self._images.size < 2:
            raise ValueError("negative pairs need captions of at least two images")
        self.negatives_per_positive = negatives_per_positive
        self.negative_side = negative_side

    def __iter__(self) -> Iterator[PairBatch]:
        rng = self._rng()
        for positives in self._anchor_batches(rng):
            yield self._pairs(positives, rng)

    def _pairs(self, positives: np.ndarray, rng: np.random.Generator) -> PairBatch:
        n_neg = positives.size * self.negatives_per_positive
        source = np.repeat(positives, self.negatives_per_positive)
        image = self.caption_image[source]
        if self.negative_side == "caption":
            swap_caption = np.ones(n_neg, dtype=bool)
        elif self.negative_side == "image":
            swap_caption = np.zeros(n_neg, dtype=bool)
        else:
            swap_caption = rng.random(n_neg) < 0.5
        neg_caption = source.copy()
        neg_image = image.copy()
        # Redraw until no pair matches; each draw fails with probability ≈ 1 / n_images.
        clash = np.ones(n_neg, dtype=bool)
        while clash.any():
            redraw_caption = clash & swap_caption
            redraw_image = clash & ~swap_caption
            neg_caption[redraw_caption] = rng.integers(
                0, self.n_captions, int(redraw_caption.sum())
            )
            neg_image[redraw_image] = rng.choice(self._images, int(redraw_image.sum()))
            clash = self.caption_image[neg_caption] == neg_image
        return PairBatch(
            image_idx=np.concatenate([self.caption_image[positives], neg_image]),
            caption_idx=np.concatenate([positives, neg_caption]),
            labels=np.concatenate(
                [np.ones(positives.size, np.float32), -np.ones(n_neg, np.float32)]
            ),
        )
