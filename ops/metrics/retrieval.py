"""Exact image-sentence retrieval ranks by counting, in bounded memory.

The rank of a query's first positive is ``1 +`` the number of candidates that score strictly
above the best positive, plus the candidates that tie with it and have a smaller index: the
same number a stable descending argsort would give, without sorting anything. Scores are
visited in blocks of caption columns (``(n_images, chunk)``), so memory never holds the full
matrix, and one pass yields both directions:

- text→image: each caption's positive image lies in the same column block, so its rank is
  counted there exactly;
- image→text: an image's best positive caption may lie in any block, so the pass counts
  against an estimate of that best score (exact for a stored matrix; a row-wise product for
  embeddings) and keeps the few candidates that land within the estimate's tolerance band.
  After the pass the exact best positive is known and settles the band; an image whose band
  overflowed or whose estimate missed is recounted in a second, restricted pass. The result
  never depends on the tolerance being right, only the speed does.

Score sources must be deterministic: computing the same block twice gives the same values.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ops.device import resolve_device
from ops.metrics.counting import count_true
from ops.metrics.precision_at_r import own_positive_precision

PROTOCOLS = ("1k", "5k", "5fold_1k", "all")
DIRECTIONS = ("i2t", "t2i")
RECALL_KS = (1, 5, 10)
# Extended-positive metrics of every protocol row (see ops.metrics.precision_at_r).
PRECISION_COLUMNS = ("r_precision", "map_at_r")
# Target size of one score block, in elements: small enough to stay in cache on CPU.
CPU_BLOCK_ELEMENTS = 1 << 20
CUDA_BLOCK_ELEMENTS = 1 << 26
# Most near-tie candidates kept for the image→text band before rows fall back to a recount.
BAND_CAPACITY = 1_000_000

BlockFunction = Callable[[int, int], "np.ndarray | torch.Tensor"]
Similarity = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _ScoreSource(abc.ABC):
    """Deterministic blocks of caption columns of an ``(n_images, n_captions)`` score matrix."""

    n_images: int
    n_captions: int
    device: torch.device
    # Stored values can be read in any block shape; computed ones only in the sweep's blocks,
    # since a product's rounding may depend on the shape it is computed in.
    any_block_shape = False

    @abc.abstractmethod
    def block(self, start: int, stop: int) -> torch.Tensor:
        """Scores of caption columns ``start:stop`` for every image row."""

    def rows_block(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.block(start, stop)[rows]

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """Each caption's score with its own image, and a bound on how far that may be from the
        block value; ``None`` when no cheap estimate exists."""
        return None


class _MatrixSource(_ScoreSource):
    """A stored matrix (numpy, memory-mapped numpy or torch), optionally a row range and a
    subset of caption columns of it."""

    def __init__(
        self,
        scores: np.ndarray | torch.Tensor,
        device: torch.device,
        rows: tuple[int, int] | None = None,
        columns: np.ndarray | None = None,
    ) -> None:
        if scores.ndim != 2:
            raise ValueError(f"scores must be a 2-D (images, captions) matrix, got {scores.shape}")
        self.scores = scores
        self.device = device
        self.any_block_shape = True
        self.row_range = rows or (0, int(scores.shape[0]))
        self.columns = columns
        self.column_offset: int | None = 0
        if columns is not None:
            contiguous = len(columns) > 0 and np.array_equal(
                columns, np.arange(columns[0], columns[0] + len(columns))
            )
            self.column_offset = int(columns[0]) if contiguous else None
        self.n_images = self.row_range[1] - self.row_range[0]
        self.n_captions = int(scores.shape[1]) if columns is None else len(columns)

    def _column_index(self, start: int, stop: int) -> slice | np.ndarray:
        if self.column_offset is not None:
            return slice(self.column_offset + start, self.column_offset + stop)
        assert self.columns is not None
        return self.columns[start:stop]

    def _to_tensor(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            return values.to(self.device).contiguous()
        values = np.ascontiguousarray(values)
        if not values.flags.writeable:
            values = values.copy()
        return torch.from_numpy(values).to(self.device)

    def block(self, start: int, stop: int) -> torch.Tensor:
        first, last = self.row_range
        index = self._column_index(start, stop)
        if isinstance(index, slice):
            return self._to_tensor(self.scores[first:last, index])
        if isinstance(self.scores, torch.Tensor):
            index = torch.from_numpy(index)
        return self._to_tensor(self.scores[first:last][:, index])

    def rows_block(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        # A stored matrix has fixed values, so reading only the needed rows is exact.
        row_index = rows.cpu().numpy() + self.row_range[0]
        index = self._column_index(start, stop)
        if isinstance(self.scores, torch.Tensor):
            if not isinstance(index, slice):
                index = torch.from_numpy(index)
            return self._to_tensor(self.scores[torch.from_numpy(row_index)][:, index])
        return self._to_tensor(self.scores[row_index][:, index])

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float]:
        image_index = caption_image.cpu().numpy() + self.row_range[0]
        if self.columns is None:
            column_index = np.arange(self.n_captions)
        else:
            column_index = np.asarray(self.columns)
        if isinstance(self.scores, torch.Tensor):
            values = self.scores[torch.from_numpy(image_index), torch.from_numpy(column_index)]
        else:
            values = self.scores[image_index, column_index]
        return self._to_tensor(values), 0.0


class _BlockFunctionSource(_ScoreSource):
    def __init__(self, function: BlockFunction, n_images: int, n_captions: int, device) -> None:
        self.function = function
        self.n_images = n_images
        self.n_captions = n_captions
        self.device = device

    def block(self, start: int, stop: int) -> torch.Tensor:
        values = self.function(start, stop)
        if not isinstance(values, torch.Tensor):
            values = torch.from_numpy(np.array(values, copy=True))
        expected = (self.n_images, stop - start)
        if tuple(values.shape) != expected:
            raise ValueError(
                f"score function returned shape {tuple(values.shape)} for captions "
                f"{start}:{stop}, expected {expected}"
            )
        return values.to(self.device).contiguous()


class _EmbeddingSource(_ScoreSource):
    """Scores computed on the fly from image and caption embeddings."""

    def __init__(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        similarity: Similarity,
        device: torch.device,
    ) -> None:
        if image_emb.ndim != 2 or text_emb.ndim != 2:
            raise ValueError("embeddings must be 2-D (items, dimension)")
        if image_emb.shape[1] != text_emb.shape[1] and not callable(similarity):
            raise ValueError(
                f"image embeddings have dimension {image_emb.shape[1]} but caption "
                f"embeddings {text_emb.shape[1]}"
            )
        if isinstance(similarity, str) and similarity not in ("dot", "neg_euclidean"):
            raise ValueError(f"unknown similarity {similarity!r}; use 'dot' or 'neg_euclidean'")
        self.device = device
        self.image_emb = image_emb.to(device)
        self.text_emb = text_emb.to(device)
        self.similarity = similarity
        self.n_images = int(image_emb.shape[0])
        self.n_captions = int(text_emb.shape[0])
        if similarity == "neg_euclidean":
            self.image_sq = (self.image_emb * self.image_emb).sum(1)
            self.text_sq = (self.text_emb * self.text_emb).sum(1)

    def block(self, start: int, stop: int) -> torch.Tensor:
        text = self.text_emb[start:stop]
        if callable(self.similarity):
            return self.similarity(self.image_emb, text).contiguous()
        product = self.image_emb @ text.T
        if self.similarity == "dot":
            return product
        # Ranked by negative squared distance: the same order as the distance, fewer roundings.
        return 2 * product - self.image_sq[:, None] - self.text_sq[start:stop][None, :]

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        if callable(self.similarity):
            return None
        values = []
        tolerance = 0.0
        step = max(1, CPU_BLOCK_ELEMENTS // max(1, self.image_emb.shape[1]))
        dimension = self.image_emb.shape[1]
        epsilon = torch.finfo(self.image_emb.dtype).eps if self.image_emb.is_floating_point() else 0
        for start in range(0, self.n_captions, step):
            image = self.image_emb[caption_image[start : start + step]]
            text = self.text_emb[start : start + step]
            product = (image * text).sum(1)
            magnitude = image.norm(dim=1) * text.norm(dim=1)
            if self.similarity == "neg_euclidean":
                sq_image = self.image_sq[caption_image[start : start + step]]
                sq_text = self.text_sq[start : start + step]
                product = 2 * product - sq_image - sq_text
                magnitude = 2 * magnitude + sq_image + sq_text
            values.append(product)
            if len(magnitude):
                tolerance = max(tolerance, float(magnitude.max()))
        # A generous multiple of the typical rounding of a length-d dot product.
        tolerance = 8 * math.sqrt(dimension) * float(epsilon) * tolerance
        return torch.cat(values), tolerance


def _score_source(
    scores: np.ndarray | torch.Tensor | BlockFunction,
    n_captions: int,
    device: torch.device | str | None,
    n_images: int | None,
) -> _ScoreSource:
    if callable(scores) and not isinstance(scores, np.ndarray | torch.Tensor):
        if n_images is None:
            raise ValueError("a score function needs n_images")
        return _BlockFunctionSource(scores, n_images, n_captions, _device_for(None, device))
    matrix = scores if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return _MatrixSource(matrix, _device_for(matrix, device))


def _device_for(tensor: object, device: torch.device | str | None) -> torch.device:
    if device is None:
        return tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    return resolve_device(device)


def default_chunk(n_images: int, device: torch.device) -> int:
    """Caption columns per block: about 2^20 scores on CPU (cache-sized), 2^26 on CUDA."""
    target = CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS
    return max(16, target // max(1, n_images))


def _check_caption_image(caption_image: Sequence[int] | np.ndarray, n_images: int) -> np.ndarray:
    mapping = np.asarray(caption_image)
    if mapping.ndim != 1 or not np.issubdtype(mapping.dtype, np.integer):
        raise ValueError("caption_image must be a 1-D integer array (caption → image index)")
    if len(mapping) and (mapping.min() < 0 or mapping.max() >= n_images):
        raise ValueError(
            f"caption_image holds image indices {mapping.min()}..{mapping.max()} outside "
            f"0..{n_images - 1}"
        )
    return mapping.astype(np.int64)


@dataclass
class _Pass:
    """What one column pass accumulates."""

    t2i_ranks: torch.Tensor | None = None
    t2i_top1: torch.Tensor | None = None
    i2t_best_value: torch.Tensor | None = None
    i2t_top1: torch.Tensor | None = None
    positives: torch.Tensor | None = None
    above: torch.Tensor | None = None
    band_rows: list[torch.Tensor] | None = None
    band_columns: list[torch.Tensor] | None = None
    band_values: list[torch.Tensor] | None = None
    overflowed: torch.Tensor | None = None


def _fail_on_nan(values: torch.Tensor) -> None:
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        raise ValueError("scores contain NaN")


def _t2i_block_counts(block: torch.Tensor, positive_rows: torch.Tensor) -> torch.Tensor:
    """Images above each caption's positive (ties by index). Rows before the smallest
    positive index are all 'earlier' (ties count), rows after the largest are all 'later'
    (ties do not), so only the rows in between need the index comparison."""
    columns = torch.arange(block.shape[1], device=block.device)
    positive = block[positive_rows, columns]
    first, last = int(positive_rows.min()), int(positive_rows.max())
    count = count_true(block[:first] >= positive, 0)
    count += count_true(block[last + 1 :] > positive, 0)
    middle = block[first : last + 1]
    middle_rows = torch.arange(first, last + 1, device=block.device)[:, None]
    tied_earlier = (middle == positive) & (middle_rows < positive_rows)
    return count + count_true((middle > positive) | tied_earlier, 0)


def _column_pass(
    source: _ScoreSource,
    caption_image: torch.Tensor,
    chunk: int,
    count_t2i: bool,
    band: tuple[torch.Tensor, torch.Tensor] | None,
) -> _Pass:
    """One sweep over caption-column blocks: text→image ranks when asked, both top-1s, the
    exact positive scores, and image→text counts against the band ``(low, high)`` if given."""
    n_images, n_captions = source.n_images, source.n_captions
    device = source.device
    result = _Pass()
    t2i_ranks, t2i_top1, positives = [], [], []
    if band is not None:
        low, high = band
        result.above = torch.zeros(n_images, dtype=torch.int64, device=device)
        result.band_rows, result.band_columns, result.band_values = [], [], []
        result.overflowed = torch.zeros(n_images, dtype=torch.bool, device=device)
        kept = 0
    for start in range(0, n_captions, chunk):
        stop = min(start + chunk, n_captions)
        block = source.block(start, stop)
        if tuple(block.shape) != (n_images, stop - start):
            raise ValueError(f"score block has shape {tuple(block.shape)}")
        positive_rows = caption_image[start:stop]
        columns = torch.arange(stop - start, device=device)
        positive = block[positive_rows, columns]
        positives.append(positive)

        if count_t2i:
            column_best, column_argmax = block.max(0)
            _fail_on_nan(column_best)
            t2i_top1.append(column_argmax)
            t2i_ranks.append(1 + _t2i_block_counts(block, positive_rows))
        if band is None:
            continue

        row_best, row_argmax = block.max(1)
        _fail_on_nan(row_best)
        if result.i2t_best_value is None:
            result.i2t_best_value, result.i2t_top1 = row_best, row_argmax + start
        else:
            # Strictly greater: an earlier caption keeps a tie.
            better = row_best > result.i2t_best_value
            result.i2t_best_value = torch.where(better, row_best, result.i2t_best_value)
            result.i2t_top1 = torch.where(better, row_argmax + start, result.i2t_top1)

        low_column, high_column = low[:, None], high[:, None]
        above_block = count_true(block > high_column, 1)
        in_band = count_true(block >= low_column, 1) - above_block
        result.above += above_block
        positive_in_band = (positive >= low[positive_rows]) & (positive <= high[positive_rows])
        own_in_band = torch.bincount(positive_rows[positive_in_band], minlength=n_images)
        rows = torch.nonzero((in_band > own_in_band) & ~result.overflowed).flatten()
        if len(rows) == 0:
            continue
        sub = block[rows]
        near = (sub >= low_column[rows]) & (sub <= high_column[rows])
        near &= positive_rows[None, :] != rows[:, None]
        local_row, local_column = torch.nonzero(near, as_tuple=True)
        if kept + len(local_row) > BAND_CAPACITY:
            result.overflowed[rows] = True
            continue
        kept += len(local_row)
        result.band_rows.append(rows[local_row])
        result.band_columns.append(local_column + start)
        result.band_values.append(sub[local_row, local_column])

    result.positives = torch.cat(positives)
    if count_t2i:
        result.t2i_top1 = torch.cat(t2i_top1)
        result.t2i_ranks = torch.cat(t2i_ranks)
    return result


def _best_positive(
    positives: torch.Tensor, caption_image: torch.Tensor, n_images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's best positive score and the smallest caption index reaching it."""
    fill = torch.full((n_images,), 0, dtype=positives.dtype, device=positives.device)
    best = fill.scatter_reduce(0, caption_image, positives, reduce="amax", include_self=False)
    caption_index = torch.arange(len(positives), device=positives.device)
    reaching = torch.where(positives == best[caption_image], caption_index, len(positives))
    first = torch.full((n_images,), len(positives), dtype=torch.int64, device=positives.device)
    first = first.scatter_reduce(0, caption_image, reaching, reduce="amin", include_self=True)
    return best, first


def _recount_rows(
    source: _ScoreSource,
    rows: torch.Tensor,
    best: torch.Tensor,
    best_caption: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """Exact image→text counts for ``rows`` against known best positives."""
    count = torch.zeros(len(rows), dtype=torch.int64, device=source.device)
    step = chunk
    if source.any_block_shape:
        step = max(1, chunk * source.n_images // max(1, len(rows)))
    threshold = best[rows][:, None]
    threshold_caption = best_caption[rows][:, None]
    for start in range(0, source.n_captions, step):
        stop = min(start + step, source.n_captions)
        sub = source.rows_block(rows, start, stop)
        caption_index = torch.arange(start, stop, device=source.device)[None, :]
        tied_earlier = (sub == threshold) & (caption_index < threshold_caption)
        count += count_true((sub > threshold) | tied_earlier, 1)
    return count


@dataclass
class Ranks:
    """1-based rank of each query's first positive and the index of its top-scored candidate."""

    t2i: np.ndarray | None
    t2i_top1: np.ndarray | None
    i2t: np.ndarray | None
    i2t_top1: np.ndarray | None


def _rank(
    source: _ScoreSource,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None,
    want_t2i: bool = True,
    want_i2t: bool = True,
) -> Ranks:
    mapping = _check_caption_image(caption_image, source.n_images)
    if len(mapping) != source.n_captions:
        raise ValueError(
            f"caption_image has {len(mapping)} entries but the scores have "
            f"{source.n_captions} captions"
        )
    if source.n_images == 0 or source.n_captions == 0:
        raise ValueError("nothing to rank: no images or no captions")
    if want_i2t:
        captions_per_image = np.bincount(mapping, minlength=source.n_images)
        empty = np.flatnonzero(captions_per_image == 0)
        if len(empty):
            raise ValueError(
                f"{len(empty)} image(s) have no caption, e.g. image index {empty[0]}; "
                "image→text ranks need at least one positive per image"
            )
    device = source.device
    chunk = chunk or default_chunk(source.n_images, device)
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    caption_image_t = torch.from_numpy(mapping).to(device)

    band = None
    first_pass: _Pass | None = None
    if want_i2t:
        estimate = source.positive_estimate(caption_image_t)
        if estimate is None:
            # No cheap estimate: take the exact positives from a first sweep.
            first_pass = _column_pass(source, caption_image_t, chunk, want_t2i, None)
            assert first_pass.positives is not None
            estimate = (first_pass.positives, 0.0)
        values, tolerance = estimate
        best_estimate, _ = _best_positive(values, caption_image_t, source.n_images)
        if tolerance == 0.0:
            band = (best_estimate, best_estimate)
        else:
            band = (best_estimate - tolerance, best_estimate + tolerance)
    counting_pass = _column_pass(
        source, caption_image_t, chunk, want_t2i and first_pass is None, band
    )
    t2i_pass = first_pass or counting_pass
    ranks = Ranks(None, None, None, None)
    if want_t2i:
        assert t2i_pass.t2i_ranks is not None and t2i_pass.t2i_top1 is not None
        ranks.t2i = t2i_pass.t2i_ranks.cpu().numpy().astype(np.int64)
        ranks.t2i_top1 = t2i_pass.t2i_top1.cpu().numpy().astype(np.int64)
    if want_i2t:
        assert band is not None and counting_pass.positives is not None
        ranks.i2t, ranks.i2t_top1 = _settle_i2t(source, caption_image_t, counting_pass, band, chunk)
    return ranks


def _settle_i2t(
    source: _ScoreSource,
    caption_image: torch.Tensor,
    sweep: _Pass,
    band: tuple[torch.Tensor, torch.Tensor],
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    assert sweep.positives is not None and sweep.above is not None
    assert sweep.band_rows is not None and sweep.overflowed is not None
    assert sweep.i2t_top1 is not None and sweep.band_columns is not None
    assert sweep.band_values is not None
    _fail_on_nan(sweep.positives)
    best, best_caption = _best_positive(sweep.positives, caption_image, source.n_images)
    low, high = band
    settled = (best >= low) & (best <= high) & ~sweep.overflowed
    count = sweep.above.clone()
    if sweep.band_rows:
        rows = torch.cat(sweep.band_rows)
        columns = torch.cat(sweep.band_columns)
        values = torch.cat(sweep.band_values)
        beats = (values > best[rows]) | ((values == best[rows]) & (columns < best_caption[rows]))
        count += torch.bincount(rows[beats], minlength=source.n_images)
    unsettled = torch.nonzero(~settled).flatten()
    if len(unsettled):
        count[unsettled] = _recount_rows(source, unsettled, best, best_caption, chunk)
    top1 = sweep.i2t_top1.cpu().numpy().astype(np.int64)
    return (1 + count).cpu().numpy().astype(np.int64), top1


def first_positive_ranks_t2i(
    scores: np.ndarray | torch.Tensor | BlockFunction,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None = None,
    *,
    n_images: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Text→image: for each caption, the 1-based rank of its image and the top-1 image index.

    ``scores`` is an ``(n_images, n_captions)`` matrix (numpy, memory-mapped, or torch), or a
    function ``f(start, stop)`` returning ``scores[:, start:stop]`` (then give ``n_images``).
    ``chunk`` is the number of caption columns per block (default: about 2^20 elements).
    """
    mapping = np.asarray(caption_image)
    source = _score_source(scores, len(mapping), device, n_images)
    ranks = _rank(source, mapping, chunk, want_t2i=True, want_i2t=False)
    assert ranks.t2i is not None and ranks.t2i_top1 is not None
    return ranks.t2i, ranks.t2i_top1


def first_positive_ranks_i2t(
    scores: np.ndarray | torch.Tensor | BlockFunction,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None = None,
    *,
    n_images: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image→text: for each image, the 1-based rank of its best-ranked caption and the top-1
    caption index. Inputs as in :func:`first_positive_ranks_t2i`; a score function is swept
    twice (once for the positives, once to count)."""
    mapping = np.asarray(caption_image)
    source = _score_source(scores, len(mapping), device, n_images)
    ranks = _rank(source, mapping, chunk, want_t2i=False, want_i2t=True)
    assert ranks.i2t is not None and ranks.i2t_top1 is not None
    return ranks.i2t, ranks.i2t_top1


def rank_scores(
    scores: np.ndarray | torch.Tensor | BlockFunction,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None = None,
    *,
    n_images: int | None = None,
    device: torch.device | str | None = None,
) -> Ranks:
    """Both directions in one sweep of a score matrix (or score function)."""
    mapping = np.asarray(caption_image)
    return _rank(_score_source(scores, len(mapping), device, n_images), mapping, chunk)


def rank_embeddings(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None = None,
    *,
    similarity: Similarity = "dot",
    device: torch.device | str | None = None,
) -> Ranks:
    """Both directions from embeddings; score blocks are computed on the fly, never the whole
    matrix. ``similarity``: ``"dot"``, ``"neg_euclidean"`` or ``f(images, texts) -> (ni, nt)``
    (e.g. a similarity network). Runs where the embeddings are unless ``device`` says."""
    image_emb = torch.as_tensor(image_emb)
    text_emb = torch.as_tensor(text_emb)
    source = _EmbeddingSource(image_emb, text_emb, similarity, _device_for(image_emb, device))
    return _rank(source, caption_image, chunk)


def recall_summary(ranks: np.ndarray | Sequence[int]) -> dict[str, float]:
    """Recall@1/5/10 in percent, median rank (floored, as in the field's public code) and mean
    rank of 1-based first-positive ranks."""
    values = np.asarray(ranks)
    if values.size == 0:
        raise ValueError("no ranks to summarise")
    if values.min() < 1:
        raise ValueError("ranks are 1-based; got a rank below 1")
    summary = {f"r{k}": float(100.0 * np.mean(values <= k)) for k in RECALL_KS}
    summary["median_rank"] = float(np.floor(np.median(values)))
    summary["mean_rank"] = float(np.mean(values))
    return summary


def retrieval_metrics(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray) -> dict[str, object]:
    """``{"i2t": summary, "t2i": summary, "rsum": sum of the six recalls}``."""
    i2t = recall_summary(i2t_ranks)
    t2i = recall_summary(t2i_ranks)
    rsum = sum(summary[f"r{k}"] for summary in (i2t, t2i) for k in RECALL_KS)
    return {"i2t": i2t, "t2i": t2i, "rsum": float(rsum)}


def evaluate_retrieval_embeddings(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None = None,
    *,
    similarity: Similarity = "dot",
    device: torch.device | str | None = None,
) -> dict[str, object]:
    """:func:`retrieval_metrics` of the embeddings' ranks, with the ranks under ``"ranks"``."""
    ranks = rank_embeddings(
        image_emb, text_emb, caption_image, chunk, similarity=similarity, device=device
    )
    assert ranks.i2t is not None and ranks.t2i is not None
    metrics = retrieval_metrics(ranks.i2t, ranks.t2i)
    metrics["ranks"] = ranks
    return metrics


@dataclass
class ProtocolResult:
    """``metrics``: rows of the ``retrieval_metrics`` table (without run, dataset, split);
    ``ranks``: rows of ``retrieval_ranks`` (protocol, fold, direction, query_id, rank,
    top1_id), ids as strings."""

    metrics: list[dict[str, object]]
    ranks: pd.DataFrame


def protocol_folds(protocol: str, n_images: int, fold_size: int = 1000) -> list[tuple[int, int]]:
    """Image index ranges evaluated by ``protocol``: ``all`` every image; ``1k`` the first
    ``fold_size``; ``5k`` the first ``5·fold_size``; ``5fold_1k`` five consecutive folds of
    ``fold_size`` (numbered 0..4) of the first ``5·fold_size``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if protocol == "all":
        return [(0, n_images)]
    needed = fold_size if protocol == "1k" else 5 * fold_size
    if n_images < needed:
        raise ValueError(f"protocol {protocol} needs {needed} images, the test set has {n_images}")
    if protocol == "1k":
        return [(0, fold_size)]
    if protocol == "5k":
        return [(0, 5 * fold_size)]
    return [(fold * fold_size, (fold + 1) * fold_size) for fold in range(5)]


def _metric_rows(
    protocol: str,
    fold: int,
    metrics: dict[str, object],
    precision: dict[str, dict[str, float]],
) -> list[dict[str, object]]:
    rows = []
    for direction in DIRECTIONS:
        summary = metrics[direction]
        assert isinstance(summary, dict)
        rows.append(
            {"protocol": protocol, "fold": fold, "direction": direction, **summary}
            | {"rsum": metrics["rsum"], **precision[direction]}
        )
    return rows


def _mean_rows(protocol: str, fold_rows: list[dict[str, object]]) -> list[dict[str, object]]:
    frame = pd.DataFrame(fold_rows)
    numeric = ["r1", "r5", "r10", "median_rank", "mean_rank", "rsum", *PRECISION_COLUMNS]
    means = frame.groupby("direction", sort=False)[numeric].mean()
    return [
        {"protocol": protocol, "fold": -1, "direction": direction}
        | {name: float(means.loc[direction, name]) for name in numeric}
        for direction in DIRECTIONS
    ]


def _run_protocol(
    make_source: Callable[[int, int, np.ndarray], _ScoreSource],
    n_images: int,
    caption_image: Sequence[int] | np.ndarray,
    protocol: str,
    fold_size: int,
    chunk: int | None,
    image_ids: Sequence[object] | None,
    caption_ids: Sequence[object] | None,
) -> ProtocolResult:
    mapping = _check_caption_image(caption_image, n_images)
    image_names = np.asarray(
        [str(i) for i in (image_ids if image_ids is not None else range(n_images))]
    )
    caption_names = np.asarray(
        [str(c) for c in (caption_ids if caption_ids is not None else range(len(mapping)))]
    )
    if len(image_names) != n_images or len(caption_names) != len(mapping):
        raise ValueError("image_ids / caption_ids do not match the number of images / captions")
    metric_rows: list[dict[str, object]] = []
    rank_frames = []
    folds = protocol_folds(protocol, n_images, fold_size)
    for fold, (first, last) in enumerate(folds):
        captions = np.flatnonzero((mapping >= first) & (mapping < last))
        local_mapping = mapping[captions] - first
        source = make_source(first, last, captions)
        ranks = _rank(source, local_mapping, chunk)
        assert ranks.i2t is not None and ranks.t2i is not None
        assert ranks.i2t_top1 is not None and ranks.t2i_top1 is not None
        precision = own_positive_precision(
            source, local_mapping, ranks.t2i, chunk or default_chunk(source.n_images, source.device)
        )
        metric_rows += _metric_rows(
            protocol, fold, retrieval_metrics(ranks.i2t, ranks.t2i), precision
        )
        for direction, query_names, top1_names, rank, top1 in (
            ("i2t", image_names[first:last], caption_names[captions], ranks.i2t, ranks.i2t_top1),
            ("t2i", caption_names[captions], image_names[first:last], ranks.t2i, ranks.t2i_top1),
        ):
            rank_frames.append(
                pd.DataFrame(
                    {
                        "protocol": protocol,
                        "fold": fold,
                        "direction": direction,
                        "query_id": query_names,
                        "rank": rank,
                        "top1_id": top1_names[top1],
                    }
                )
            )
    if protocol == "5fold_1k":
        metric_rows += _mean_rows(protocol, metric_rows)
    return ProtocolResult(metric_rows, pd.concat(rank_frames, ignore_index=True))


def evaluate_protocol(
    image_emb: torch.Tensor | np.ndarray,
    text_emb: torch.Tensor | np.ndarray,
    caption_image: Sequence[int] | np.ndarray,
    protocol: str,
    *,
    fold_size: int = 1000,
    similarity: Similarity = "dot",
    chunk: int | None = None,
    device: torch.device | str | None = None,
    image_ids: Sequence[object] | None = None,
    caption_ids: Sequence[object] | None = None,
) -> ProtocolResult:
    """Retrieval metrics of embeddings under ``protocol`` (see :func:`protocol_folds`).

    ``fold`` is 0 for ``1k``, ``5k`` and ``all``; 0..4 for the folds of ``5fold_1k``, whose
    rows are followed by their average with ``fold = -1`` (rsum there is the folds' mean).
    """
    image_emb = torch.as_tensor(image_emb)
    text_emb = torch.as_tensor(text_emb)
    target = _device_for(image_emb, device)

    def make_source(first: int, last: int, captions: np.ndarray) -> _ScoreSource:
        return _EmbeddingSource(
            image_emb[first:last], text_emb[torch.from_numpy(captions)], similarity, target
        )

    return _run_protocol(
        make_source,
        int(image_emb.shape[0]),
        caption_image,
        protocol,
        fold_size,
        chunk,
        image_ids,
        caption_ids,
    )


def evaluate_protocol_scores(
    scores: np.ndarray | torch.Tensor,
    caption_image: Sequence[int] | np.ndarray,
    protocol: str,
    *,
    fold_size: int = 1000,
    chunk: int | None = None,
    device: torch.device | str | None = None,
    image_ids: Sequence[object] | None = None,
    caption_ids: Sequence[object] | None = None,
) -> ProtocolResult:
    """:func:`evaluate_protocol` for a stored ``(n_images, n_captions)`` score matrix (may be
    memory-mapped: only blocks of it are read)."""
    matrix = scores if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a 2-D (images, captions) matrix, got {matrix.shape}")
    if matrix.shape[1] != len(np.asarray(caption_image)):
        raise ValueError(
            f"scores have {matrix.shape[1]} caption columns but caption_image has "
            f"{len(np.asarray(caption_image))} entries"
        )
    target = _device_for(matrix, device)

    def make_source(first: int, last: int, captions: np.ndarray) -> _ScoreSource:
        return _MatrixSource(matrix, target, rows=(first, last), columns=captions)

    return _run_protocol(
        make_source,
        int(matrix.shape[0]),
        caption_image,
        protocol,
        fold_size,
        chunk,
        image_ids,
        caption_ids,
    )
