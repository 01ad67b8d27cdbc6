"""R-Precision and mAP@R: retrieval metrics that credit every correct match, not just the first.

For a query with R positives ranked among all candidates (by score, ties by index, as the
evaluator ranks), let r_1 < … < r_R be the 1-based ranks of its positives. Then (Musgrave,
Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020)::

    R-Precision = |{m : r_m ≤ R}| / R
    mAP@R       = (1/R) · Σ_{m : r_m ≤ R} m / r_m

With a dataset's own positives, an image's are its captions (R = 5 in the usual layout) and a
caption's is its image (R = 1, where both equal R@1). Ranks come from score blocks of caption
columns, like the evaluator's: memory stays bounded by a block, never the whole matrix.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ops.metrics.counting import count_true


class BlockSource(Protocol):
    """Deterministic ``(n_images, stop - start)`` blocks of caption columns of a score matrix."""

    n_images: int
    n_captions: int
    device: torch.device

    def block(self, start: int, stop: int) -> torch.Tensor: ...


def precision_at_r(
    positive_ranks: np.ndarray, query_of: np.ndarray, n_queries: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: (R-Precision, mAP@R) as fractions, from the rank of each of its positives.

    ``positive_ranks[p]`` is the 1-based rank of positive ``p`` among its query's candidates,
    ``query_of[p]`` its query. A query without positives scores NaN."""
    ranks = np.asarray(positive_ranks, dtype=np.int64)
    queries = np.asarray(query_of, dtype=np.int64)
    order = np.lexsort((ranks, queries))
    ranks, queries = ranks[order], queries[order]
    r = np.bincount(queries, minlength=n_queries)
    first = np.concatenate([[0], np.cumsum(r)[:-1]])
    position = np.arange(len(ranks)) - first[queries] + 1  # m: the positive's order
    within = ranks <= r[queries]
    hits = np.bincount(queries, weights=within, minlength=n_queries)
    precision_sum = np.bincount(queries, weights=within * position / ranks, minlength=n_queries)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / r, precision_sum / r


def _positive_scores(source: BlockSource, caption_image: torch.Tensor, chunk: int) -> torch.Tensor:
    """Each caption's score with its own image, read from the sweep's own blocks (a product's
    rounding can depend on the block it is computed in)."""
    columns, device = [], source.device
    for start in range(0, source.n_captions, chunk):
        stop = min(start + chunk, source.n_captions)
        block = source.block(start, stop)
        columns.append(block[caption_image[start:stop], torch.arange(stop - start, device=device)])
    return torch.cat(columns)


def i2t_positive_ranks(source: BlockSource, caption_image: np.ndarray, chunk: int) -> np.ndarray:
    """For each caption, its 1-based rank among all captions for its own image."""
    device = source.device
    mapping = torch.from_numpy(np.asarray(caption_image, dtype=np.int64)).to(device)
    scores = _positive_scores(source, mapping, chunk)
    # Slot s of image i holds its s-th caption; empty slots score +inf and so count nothing.
    per_image = torch.bincount(mapping, minlength=source.n_images)
    slots = int(per_image.max())
    order = torch.argsort(mapping, stable=True)
    first = torch.cumsum(per_image, 0) - per_image
    slot = torch.arange(len(order), device=device) - first[mapping[order]]
    slot_caption = torch.full((source.n_images, slots), source.n_captions, device=device)
    slot_score = torch.full(
        (source.n_images, slots), float("inf"), dtype=scores.dtype, device=device
    )
    slot_caption[mapping[order], slot] = order
    slot_score[mapping[order], slot] = scores[order]
    above = torch.zeros((source.n_images, slots), dtype=torch.int64, device=device)
    for start in range(0, source.n_captions, chunk):
        stop = min(start + chunk, source.n_captions)
        block = source.block(start, stop)
        column = torch.arange(start, stop, device=device)[None, :]
        for s in range(slots):
            threshold = slot_score[:, s : s + 1]
            earlier_tie = (block == threshold) & (column < slot_caption[:, s : s + 1])
            above[:, s] += count_true((block > threshold) | earlier_tie, 1)
    ranks = torch.empty(len(order), dtype=torch.int64, device=device)
    ranks[order] = 1 + above[mapping[order], slot]
    return ranks.cpu().numpy()


def own_positive_precision(
    source: BlockSource, caption_image: np.ndarray, t2i_ranks: np.ndarray, chunk: int
) -> dict[str, dict[str, float]]:
    """``{"i2t": {...}, "t2i": {...}}`` of ``r_precision`` and ``map_at_r`` (percent), with an
    image's captions and a caption's image as the positives; ``t2i_ranks`` are the
    evaluator's first-positive ranks (a caption's only positive)."""
    ranks = i2t_positive_ranks(source, caption_image, chunk)
    r_precision, map_at_r = precision_at_r(ranks, caption_image, source.n_images)
    t2i_hit = 100.0 * float(np.mean(np.asarray(t2i_ranks) == 1))
    return {
        "i2t": {
            "r_precision": 100.0 * float(np.mean(r_precision)),
            "map_at_r": 100.0 * float(np.mean(map_at_r)),
        },
        "t2i": {"r_precision": t2i_hit, "map_at_r": t2i_hit},
    }
