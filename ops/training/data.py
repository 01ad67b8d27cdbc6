"""Training inputs per split: the checked containers of each task's arrays."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

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
