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

Blocks come from a score source (``ops.metrics.score_sources``); sweeping one twice must give
the same values, or the second pass would count against the wrong best positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ops.device import device_for
from ops.metrics.counting import count_true
from ops.metrics.score_sources import (
    BlockFunction,
    EmbeddingSource,
    ScoreSource,
    Similarity,
    default_chunk,
    score_source,
)

# Most near-tie candidates kept for the image→text band before rows fall back to a recount.
BAND_CAPACITY = 1_000_000


def check_caption_image(caption_image: Sequence[int] | np.ndarray, n_images: int) -> np.ndarray:
    """``caption_image`` as int64, refused early when it cannot index the images: a bad index
    would otherwise surface deep in a sweep as an indexing error, or not at all."""
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
    source: ScoreSource,
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
    source: ScoreSource,
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


def rank_source(
    source: ScoreSource,
    caption_image: Sequence[int] | np.ndarray,
    chunk: int | None,
) -> Ranks:
    """Ranks from any score source: what the public rankers and the protocols' folds share."""
    mapping = check_caption_image(caption_image, source.n_images)
    if len(mapping) != source.n_captions:
        raise ValueError(
            f"caption_image has {len(mapping)} entries but the scores have "
            f"{source.n_captions} captions"
        )
    if source.n_images == 0 or source.n_captions == 0:
        raise ValueError("nothing to rank: no images or no captions")
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

    first_pass: _Pass | None = None
    estimate = source.positive_estimate(caption_image_t)
    if estimate is None:
        # No cheap estimate: take the exact positives from a first sweep.
        first_pass = _column_pass(source, caption_image_t, chunk, True, None)
        assert first_pass.positives is not None
        estimate = (first_pass.positives, 0.0)
    values, tolerance = estimate
    best_estimate, _ = _best_positive(values, caption_image_t, source.n_images)
    if tolerance == 0.0:
        band = (best_estimate, best_estimate)
    else:
        band = (best_estimate - tolerance, best_estimate + tolerance)
    counting_pass = _column_pass(source, caption_image_t, chunk, first_pass is None, band)
    t2i_pass = first_pass or counting_pass
    assert t2i_pass.t2i_ranks is not None and t2i_pass.t2i_top1 is not None
    assert counting_pass.positives is not None
    i2t, i2t_top1 = _settle_i2t(source, caption_image_t, counting_pass, band, chunk)
    return Ranks(
        t2i=t2i_pass.t2i_ranks.cpu().numpy().astype(np.int64),
        t2i_top1=t2i_pass.t2i_top1.cpu().numpy().astype(np.int64),
        i2t=i2t,
        i2t_top1=i2t_top1,
    )


def _settle_i2t(
    source: ScoreSource,
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
    return rank_source(score_source(scores, len(mapping), device, n_images), mapping, chunk)


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
    source = EmbeddingSource(image_emb, text_emb, similarity, device_for(image_emb, device))
    return rank_source(source, caption_image, chunk)
