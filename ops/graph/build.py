"""The neighborhood graph: the positives and neighborhoods of the training split, which the
training assets learn from.

Relations (one row per directed edge of the ``neighbors`` table):

- ``image_sentence``: an image and each of its captions (the positives of retrieval);
- ``sentence_sentence``: captions of the same image (the paper's sentence neighborhoods);
- ``phrase_region``: a phrase and each region of its image whose IoU with the phrase's
  ground-truth box is at least ``positive_iou`` (weight: the IoU);
- ``region_region``: regions positive for the same phrase (the region-side neighborhoods);
- ``knn_image`` / ``knn_sentence`` (``knn_k`` > 0): each training image's (sentence's) ``k``
  nearest other images (sentences) by cosine similarity of their input features (weight: the
  similarity).

Only training-split items appear: validation and test ids never enter what training learns
from. Edges are generated a block of images at a time, and every block holds all edges of its
sources, so degrees are counted without holding the graph in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from ops.features.region_table import RegionTable, region_table
from ops.geometry import pairwise_iou
from ops.metrics.localization_rule import GROUND_TRUTH_COLUMNS, evaluable_phrases
from ops.setting_sources import source

IMAGE_SENTENCE = "image_sentence"
SENTENCE_SENTENCE = "sentence_sentence"
PHRASE_REGION = "phrase_region"
REGION_REGION = "region_region"
KNN_IMAGE = "knn_image"
KNN_SENTENCE = "knn_sentence"
EDGE_COLUMNS = ["relation", "source_id", "target_id", "weight"]
TRAIN = "train"


class GraphSettings(BaseModel):
    """How the graph is built: the paper's graph (no kNN neighborhoods), with positive
    regions at the lab's IoU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    positive_iou: float = Field(
        0.6,
        gt=0,
        le=1,
        description="a region is a phrase's positive at this IoU with the phrase's box (lab: 0.6)",
        json_schema_extra=source("lab"),
    )
    knn_k: int = Field(
        0,
        ge=0,
        description="> 0: also link each training image and sentence to its k nearest "
        "neighbors by feature (cosine); 0 = the paper's graph",
        json_schema_extra=source("paper", "0: no kNN neighborhoods"),
    )
    knn_faiss_min_items: int = Field(
        20_000,
        ge=1,
        description="kNN over this many items or more searches with faiss; fewer, with exact "
        "chunked matrix products (same neighbors either way)",
        json_schema_extra=source("project"),
    )


def _edges(relation: str, sources, targets, weights) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "relation": relation,
            "source_id": np.asarray(sources, dtype=object),
            "target_id": np.asarray(targets, dtype=object),
            "weight": np.asarray(weights, dtype=np.float64),
        },
        columns=EDGE_COLUMNS,
    )


def _image_blocks(frame: pd.DataFrame, images_per_block: int) -> Iterator[pd.DataFrame]:
    """``frame``'s rows in blocks of whole images (``images_per_block`` images each)."""
    image_ids = frame["image_id"].to_numpy()
    order = np.argsort(image_ids, kind="stable")
    images, starts = np.unique(image_ids[order], return_index=True)
    bounds = np.append(starts, len(order))
    for first in range(0, len(images), images_per_block):
        last = min(first + images_per_block, len(images))
        yield frame.iloc[order[bounds[first] : bounds[last]]]


def caption_edges(captions: pd.DataFrame, images_per_block: int = 10_000) -> Iterator[pd.DataFrame]:
    """``image_sentence`` and ``sentence_sentence`` edges of ``captions`` (caption_id,
    image_id), a block of images at a time."""
    for block in _image_blocks(captions[["image_id", "caption_id"]], images_per_block):
        pairs = block.merge(block, on="image_id", suffixes=("_a", "_b"))
        pairs = pairs[pairs["caption_id_a"] != pairs["caption_id_b"]]
        yield pd.concat(
            [
                _edges(IMAGE_SENTENCE, block["image_id"], block["caption_id"], 1.0),
                _edges(SENTENCE_SENTENCE, pairs["caption_id_a"], pairs["caption_id_b"], 1.0),
            ],
            ignore_index=True,
        )


def positive_regions(
    phrase_boxes: np.ndarray, region_boxes: np.ndarray, positive_iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phrase rows, region rows, IoU) of the pairs of one image at IoU ≥ ``positive_iou``."""
    iou = pairwise_iou(phrase_boxes, region_boxes)
    rows, cols = np.nonzero(iou >= positive_iou)
    return rows, cols, iou[rows, cols]


def region_edges(
    phrases: pd.DataFrame,
    regions: pd.DataFrame | RegionTable,
    positive_iou: float,
    images_per_block: int = 1_000,
) -> Iterator[pd.DataFrame]:
    """``phrase_region`` edges (IoU ≥ ``positive_iou``) of the boxed, visual ``phrases`` and
    ``region_region`` edges (regions positive for the same phrase, no self loops), a block of
    images at a time: memory follows the block's proposals, not the dataset's. ``regions``
    is the proposals table (a :class:`RegionTable` holds it without a Python object a row)."""
    boxed = phrases[evaluable_phrases(phrases, every_listed_type=False)]
    table = region_table(regions)
    order, starts = table.image_rows()
    code_of = {image_id: code for code, image_id in enumerate(table.image_ids)}
    for block in _image_blocks(boxed, images_per_block):
        frames = []
        for image_id, image_phrases in block.groupby("image_id", sort=False):
            code = code_of.get(image_id)
            if code is None:
                continue
            image_rows = order[starts[code] : starts[code + 1]]
            rows, cols, iou = positive_regions(
                image_phrases[list(GROUND_TRUTH_COLUMNS)].to_numpy(),
                table.boxes[image_rows],
                positive_iou,
            )
            region_ids = table.region_ids[image_rows].astype(object)
            frames.append(
                _edges(
                    PHRASE_REGION,
                    image_phrases["phrase_id"].to_numpy()[rows],
                    region_ids[cols],
                    iou,
                )
            )
            positive = np.zeros((len(image_phrases), len(image_rows)), dtype=bool)
            positive[rows, cols] = True
            shared = positive.T.astype(np.int32) @ positive.astype(np.int32) > 0
            np.fill_diagonal(shared, False)
            first, second = np.nonzero(shared)
            frames.append(_edges(REGION_REGION, region_ids[first], region_ids[second], 1.0))
        if frames:
            yield pd.concat(frames, ignore_index=True)


def nearest_neighbors(
    features: np.ndarray, k: int, faiss_min_items: int = 20_000, chunk: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(rows, neighbors (len(rows), k'), similarities)`` per chunk of query rows: each row's
    ``k' = min(k, n − 1)`` most cosine-similar other rows, most similar first, itself never
    among them. With ``faiss_min_items`` or more rows the search runs on a faiss flat index,
    otherwise as exact chunked matrix products; both are exact, so they return the same
    neighbors (up to the order of exact ties)."""
    matrix = np.ascontiguousarray(features, dtype=np.float32)
    n = matrix.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.maximum(norms, 1e-12)
    if n >= faiss_min_items:
        yield from _faiss_neighbors(matrix, k, chunk)
    else:
        yield from _exact_neighbors(matrix, k, chunk)


def _exact_neighbors(
    matrix: np.ndarray, k: int, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    tensor = torch.from_numpy(matrix)
    for start in range(0, len(tensor), chunk):
        block = tensor[start : start + chunk] @ tensor.T
        rows = torch.arange(start, start + len(block))
        block[torch.arange(len(block)), rows] = -float("inf")
        values, indices = block.topk(k, dim=1)
        yield rows.numpy(), indices.numpy(), values.numpy()


def _faiss_neighbors(
    matrix: np.ndarray, k: int, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    import faiss  # a dependency; imported here because it is slow to load

    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(matrix)
    for start in range(0, len(matrix), chunk):
        queries = matrix[start : start + chunk]
        values, indices = index.search(queries, k + 1)
        rows = np.arange(start, start + len(queries))
        # Drop the row itself; where an exact duplicate pushed it out of the list, drop the last.
        is_self = indices == rows[:, None]
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        yield rows, indices[keep].reshape(len(rows), k), values[keep].reshape(len(rows), k)


def knn_edges(
    ids: np.ndarray, features: np.ndarray, k: int, relation: str, faiss_min_items: int = 20_000
) -> Iterator[pd.DataFrame]:
    """``relation`` edges from each of ``ids`` to its ``k`` nearest neighbors by feature."""
    ids = np.asarray(ids, dtype=object)
    for rows, neighbors, similarity in nearest_neighbors(features, k, faiss_min_items):
        yield _edges(
            relation,
            np.repeat(ids[rows], neighbors.shape[1]),
            ids[neighbors.ravel()],
            similarity.ravel(),
        )


def train_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The training split's rows of a table with a ``split`` column."""
    return frame[frame["split"].astype(str) == TRAIN]


def graph_edges(
    settings: GraphSettings,
    captions: pd.DataFrame,
    phrases: pd.DataFrame | None = None,
    regions: pd.DataFrame | RegionTable | None = None,
    image_features: tuple[pd.DataFrame, np.ndarray] | None = None,
    text_features: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> Iterator[pd.DataFrame]:
    """Every edge of the training split, in blocks. ``captions`` and ``phrases`` are the
    dataset tables, ``regions`` the proposals table (None: no phrase task), and the feature
    pairs ``(ids, matrix)`` are read for the kNN relations only (``knn_k`` > 0)."""
    yield from caption_edges(train_rows(captions))
    if regions is not None and phrases is not None and len(phrases):
        train_phrases = train_rows(phrases)
        # Only training phrases' images are looked up: other images' regions are never read.
        yield from region_edges(train_phrases, regions, settings.positive_iou)
    if settings.knn_k <= 0:
        return
    for relation, pair, id_column in (
        (KNN_IMAGE, image_features, "image_id"),
        (KNN_SENTENCE, text_features, "caption_id"),
    ):
        if pair is None:
            continue
        ids, matrix = pair
        rows = np.flatnonzero(ids["split"].astype(str).to_numpy() == TRAIN)
        yield from knn_edges(
            ids[id_column].to_numpy()[rows],
            matrix[rows],
            settings.knn_k,
            relation,
            settings.knn_faiss_min_items,
        )


def knn_method(settings: GraphSettings, items: int) -> str:
    """How a kNN relation over ``items`` items is searched (for the asset's metadata)."""
    if settings.knn_k <= 0:
        return "none"
    return "faiss" if items >= settings.knn_faiss_min_items else "exact"
