"""Retrieval protocols: recall tables of first-positive ranks, and the field's 1K / 5-fold 1K /
5K / all-images evaluations of embeddings or stored score matrices as ProtocolResult rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ops.device import device_for
from ops.metrics.precision_at_r import own_positive_precision
from ops.metrics.protocol_names import PROTOCOLS
from ops.metrics.ranking import check_caption_image, rank_embeddings, rank_source
from ops.metrics.score_sources import (
    EmbeddingSource,
    MatrixSource,
    ScoreSource,
    Similarity,
    default_chunk,
)

DIRECTIONS = ("i2t", "t2i")
RECALL_KS = (1, 5, 10)
# Extended-positive metrics of every protocol row (see ops.metrics.precision_at_r).
PRECISION_COLUMNS = ("r_precision", "map_at_r")


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
    ``fold_size`` (on COCO's Karpathy split, the first 1K of its 5K test images); ``5k`` the
    first ``5·fold_size``; ``5fold_1k`` five consecutive folds of ``fold_size`` (numbered
    0..4) of the first ``5·fold_size``; ``paper_1k`` the authors' own COCO test list: the
    whole test split of a dataset on their split, which holds exactly ``fold_size`` images."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if protocol == "all":
        return [(0, n_images)]
    if protocol == "paper_1k":
        if n_images != fold_size:
            raise ValueError(
                f"protocol paper_1k is the authors' {fold_size}-image COCO test list, the test "
                f"set has {n_images} images: register the dataset with --split paper"
            )
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
    make_source: Callable[[int, int, np.ndarray], ScoreSource],
    n_images: int,
    caption_image: Sequence[int] | np.ndarray,
    protocol: str,
    fold_size: int,
    chunk: int | None,
    image_ids: Sequence[object] | None,
    caption_ids: Sequence[object] | None,
) -> ProtocolResult:
    mapping = check_caption_image(caption_image, n_images)
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
        ranks = rank_source(source, local_mapping, chunk)
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


def evaluate_protocol_source(
    make_source: Callable[[int, int, np.ndarray], ScoreSource],
    n_images: int,
    caption_image: Sequence[int] | np.ndarray,
    protocol: str,
    *,
    fold_size: int = 1000,
    chunk: int | None = None,
    image_ids: Sequence[object] | None = None,
    caption_ids: Sequence[object] | None = None,
) -> ProtocolResult:
    """:func:`evaluate_protocol` for scores that a fold's own source computes:
    ``make_source(first image, last image, caption rows)`` gives the fold's scores."""
    return _run_protocol(
        make_source, n_images, caption_image, protocol, fold_size, chunk, image_ids, caption_ids
    )


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
    target = device_for(image_emb, device)

    def make_source(first: int, last: int, captions: np.ndarray) -> ScoreSource:
        return EmbeddingSource(
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
    target = device_for(matrix, device)

    def make_source(first: int, last: int, captions: np.ndarray) -> ScoreSource:
        return MatrixSource(matrix, target, rows=(first, last), columns=captions)

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


def protocols_for(n_images: int) -> list[str]:
    """The field's protocols for a test set of ``n_images``: COCO-sized sets are reported as
    the mean of five 1K folds and on the whole 5K; a 1K set as ``1k``; others as ``all``."""
    if n_images >= 5000:
        return ["5fold_1k", "5k"]
    if n_images == 1000:
        return ["1k"]
    return ["all"]
