"""Training inputs per split, their on-device copies, and the phrase batch sampler."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import torch

from ops.device import device_feature_budget, pin_memory_for
from ops.geometry import pairwise_iou
from ops.storage.row_files import RowSubset


def _matrix(
    name: str, value: np.ndarray | RowSubset, rows: int | None = None
) -> np.ndarray | RowSubset:
    """The feature matrix checked: 2-D, ``rows`` long, finite. A :class:`RowSubset` stays on
    disk (its rows are read per batch); an array is made contiguous float32."""
    if isinstance(value, RowSubset):
        if value.dtype != np.float32:
            raise ValueError(f"{name} must hold float32 rows, got {value.dtype}")
        array: np.ndarray | RowSubset = value
    else:
        array = np.ascontiguousarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {rows}")
    if isinstance(array, RowSubset) and array.finite_checked:
        return array
    row = first_non_finite_row(array)
    if row is not None:
        raise ValueError(f"{name} holds NaN or Inf (first at row {row})")
    return array


def first_non_finite_row(
    matrix: np.ndarray | RowSubset, chunk_elements: int = 1 << 22
) -> int | None:
    """The first row holding NaN or Inf, checked in chunks of about ``chunk_elements`` values
    (memory-mapped matrices stay mapped: no matrix-sized temporary is made)."""
    chunk_rows = max(1, chunk_elements // max(1, matrix.shape[1]))
    for start in range(0, matrix.shape[0], chunk_rows):
        finite = np.isfinite(np.asarray(matrix[start : start + chunk_rows])).all(axis=1)
        if not finite.all():
            return start + int(np.flatnonzero(~finite)[0])
    return None


def _indices(name: str, value: np.ndarray, rows: int, upper: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != (rows,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an integer vector of length {rows}, got {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if rows and (array.min() < 0 or (upper is not None and array.max() >= upper)):
        bad = int(np.flatnonzero((array < 0) | (array >= (upper or np.inf)))[0])
        raise ValueError(f"{name}[{bad}] = {array[bad]} is out of range [0, {upper})")
    return array


def _boxes(name: str, value: np.ndarray, rows: int) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=np.float32)
    if array.shape != (rows, 4):
        raise ValueError(f"{name} must have shape ({rows}, 4), got {array.shape}")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(
            f"{name} row {row} is not a finite box (phrases without a box must "
            "be left out of training data)"
        )
    return array


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _csr(name: str, start: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A checked CSR pair over ``n`` items (an empty ``start`` means no item has any)."""
    start = np.zeros(n + 1, dtype=np.int64) if np.asarray(start).size == 0 else np.asarray(start)
    start = _indices(f"{name}_start", start, n + 1)
    rows = np.asarray(rows)
    rows = _indices(name, rows, rows.size, n)
    if start[0] != 0 or start[-1] != rows.size or (np.diff(start) < 0).any():
        raise ValueError(f"{name}_start is not a CSR index over {rows.size} entries")
    return start, rows


@dataclass(frozen=True)
class ImageSentenceData:
    """One split for image–sentence retrieval: ``caption_image[j]`` is the row of caption j's
    image in ``image_features``. Caption j's nearest captions by feature (the graph's kNN
    sentence neighborhood, training split only) are ``knn_rows[knn_start[j] : knn_start[j+1]]``;
    both empty when the graph has none."""

    image_features: np.ndarray | RowSubset
    text_features: np.ndarray | RowSubset
    caption_image: np.ndarray
    knn_start: np.ndarray = field(default_factory=_no_rows)
    knn_rows: np.ndarray = field(default_factory=_no_rows)

    def __post_init__(self) -> None:
        images = _matrix("image_features", self.image_features)
        texts = _matrix("text_features", self.text_features)
        object.__setattr__(self, "image_features", images)
        object.__setattr__(self, "text_features", texts)
        object.__setattr__(
            self,
            "caption_image",
            _indices("caption_image", self.caption_image, texts.shape[0], images.shape[0]),
        )
        start, rows = _csr("knn_rows", self.knn_start, self.knn_rows, texts.shape[0])
        object.__setattr__(self, "knn_start", start)
        object.__setattr__(self, "knn_rows", rows)

    @property
    def has_knn(self) -> bool:
        return bool(self.knn_rows.size)

    @property
    def image_dim(self) -> int:
        return int(self.image_features.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.text_features.shape[1])


@dataclass(frozen=True)
class PhraseRegionData:
    """One split for phrase localization. Regions are proposals plus, where
    ``region_is_gt``, ground-truth boxes (used for training only); boxes are 0-based
    ``x1, y1, x2, y2`` with exclusive x2, y2; a phrase's box is the union of its boxes.
    ``(positive_phrase[i], positive_region[i])`` are the positive pairs (phrase row, region
    row): the graph's ``phrase_region`` edges, given for the training split.
    ``phrase_chain``, when given, numbers each phrase's entity chain (equal numbers: the same
    entity of the same image); empty when unknown."""

    region_features: np.ndarray | RowSubset
    region_image: np.ndarray
    region_boxes: np.ndarray
    phrase_features: np.ndarray | RowSubset
    phrase_image: np.ndarray
    phrase_boxes: np.ndarray
    region_is_gt: np.ndarray
    positive_phrase: np.ndarray = field(default_factory=_no_rows)
    positive_region: np.ndarray = field(default_factory=_no_rows)
    phrase_chain: np.ndarray = field(default_factory=_no_rows)

    def __post_init__(self) -> None:
        regions = _matrix("region_features", self.region_features)
        phrases = _matrix("phrase_features", self.phrase_features)
        n_reg, n_ph = regions.shape[0], phrases.shape[0]
        is_gt = np.asarray(self.region_is_gt)
        if is_gt.shape != (n_reg,):
            raise ValueError(f"region_is_gt must have length {n_reg}, got {is_gt.shape}")
        checked = {
            "region_features": regions,
            "phrase_features": phrases,
            "region_image": _indices("region_image", self.region_image, n_reg),
            "phrase_image": _indices("phrase_image", self.phrase_image, n_ph),
            "region_boxes": _boxes("region_boxes", self.region_boxes, n_reg),
            "phrase_boxes": _boxes("phrase_boxes", self.phrase_boxes, n_ph),
            "region_is_gt": is_gt.astype(bool),
        }
        pairs = np.asarray(self.positive_phrase).size
        checked["positive_phrase"] = _indices("positive_phrase", self.positive_phrase, pairs, n_ph)
        checked["positive_region"] = _indices("positive_region", self.positive_region, pairs, n_reg)
        if np.asarray(self.phrase_chain).size:
            checked["phrase_chain"] = _indices("phrase_chain", self.phrase_chain, n_ph)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def image_dim(self) -> int:
        return int(self.region_features.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.phrase_features.shape[1])

    @property
    def n_images(self) -> int:
        ends = [a.max() + 1 for a in (self.region_image, self.phrase_image) if a.size]
        return int(max(ends, default=0))


SplitData = ImageSentenceData | PhraseRegionData


def task_of(data: SplitData) -> str:
    return "image_sentence" if isinstance(data, ImageSentenceData) else "phrase_region"


# Labels of rows already counted (a phrase's chain): checkpoints written before such a field
# existed must still resume.
_UNSIGNED_FIELDS = frozenset({"phrase_chain"})


def data_signature(data: SplitData) -> dict[str, int]:
    """Shapes that a resumed run must see again (a cheap guard against swapped inputs)."""
    return {
        f.name: int(np.prod(np.shape(getattr(data, f.name))))
        for f in fields(data)
        if f.name not in _UNSIGNED_FIELDS
    }


# ---------------------------------------------------------------------------------------------
# On-device copies


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if pin_memory_for(device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class HostRows:
    """A feature matrix left where it is (a file, through :class:`RowSubset`): indexing with
    row numbers or a slice reads just those rows and hands them to ``device`` as a tensor,
    through a pinned staging buffer on CUDA. It answers the indexing and ``shape``/``device``
    that training and evaluation ask of a device tensor."""

    def __init__(self, rows: RowSubset, device: torch.device) -> None:
        self.rows = rows
        self.device = device
        self.shape = torch.Size(rows.shape)
        self._staging: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, slice):
            positions = np.arange(self.shape[0])[index]
        else:
            positions = torch.as_tensor(index).cpu().numpy()
        values = torch.from_numpy(self.rows.take(positions.reshape(-1)))
        if positions.ndim == 0:
            values = values[0]
        if not pin_memory_for(self.device):
            return values.to(self.device)
        return self._stage(values).to(self.device, non_blocking=True)

    def _stage(self, values: torch.Tensor) -> torch.Tensor:
        # One pinned buffer, grown to the largest batch seen; a copy out of it must finish
        # before the buffer is refilled, hence the synchronize.
        needed = values.numel()
        if self._staging is None or self._staging.numel() < needed:
            self._staging = torch.empty(needed, dtype=values.dtype).pin_memory()
        else:
            torch.cuda.current_stream(self.device).synchronize()
        staged = self._staging[:needed].view(values.shape)
        staged.copy_(values)
        return staged


def _placed(matrix: np.ndarray | RowSubset, device: torch.device) -> torch.Tensor | HostRows:
    if not isinstance(matrix, RowSubset):
        return _to_device(matrix, device)
    if device.type == "cuda" and matrix.nbytes <= device_feature_budget(device):
        return _to_device(matrix.take(), device)
    return HostRows(matrix, device)


@dataclass(frozen=True)
class Grouping:
    """Rows grouped by image: image i owns ``order[start[i] : start[i] + count[i]]``."""

    order: np.ndarray
    start: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, row_image: np.ndarray, n_images: int) -> Grouping:
        order = np.argsort(row_image, kind="stable")
        count = np.bincount(row_image, minlength=n_images).astype(np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        return cls(order.astype(np.int64), start, count)

    def rows_of(self, images: np.ndarray) -> np.ndarray:
        """All rows of ``images``, image by image, in the order given."""
        counts = self.count[images]
        if counts.sum() == 0:
            return np.zeros(0, dtype=np.int64)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.order[np.repeat(self.start[images], counts) + offsets]


@dataclass(frozen=True)
class DeviceFeatures:
    """A split's feature matrices as batches see them: on the device when they are in memory
    already or fit :func:`device_feature_budget` on a GPU, else left in their files and read
    batch by batch (:class:`HostRows`), so no whole split is copied into the process."""

    image_features: torch.Tensor | HostRows
    text_features: torch.Tensor | HostRows

    @classmethod
    def of(cls, data: SplitData, device: torch.device) -> DeviceFeatures:
        if isinstance(data, ImageSentenceData):
            return cls(_placed(data.image_features, device), _placed(data.text_features, device))
        return cls(_placed(data.region_features, device), _placed(data.phrase_features, device))

    @property
    def placement(self) -> str:
        """``device`` (whole matrices on the device) or ``gathered per batch`` (from files)."""
        gathered = any(isinstance(m, HostRows) for m in (self.image_features, self.text_features))
        return "gathered per batch" if gathered else "device"


# ---------------------------------------------------------------------------------------------
# Phrase batches


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
