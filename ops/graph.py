"""The neighborhood graph: which items are positives or neighbors of which.

Relations (``neighbors`` table, one row per directed edge):

- ``image_sentence``: an image and each of its captions (the positives of retrieval);
- ``sentence_sentence``: captions of the same image (the paper's sentence neighborhoods);
- ``phrase_region``: a phrase and each region of its image whose IoU with the phrase's
  ground-truth box is at least ``positive_iou``;
- ``region_region``: regions positive for the same phrase (the region-side neighborhoods);
- ``knn_image`` / ``knn_sentence`` (optional): nearest neighbors in feature space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ops.features.boxes import pairwise_iou

NEIGHBOR_COLUMNS = ["dataset", "relation", "source_id", "target_id", "weight"]


@dataclass
class GraphStats:
    edges: dict[str, int]
    degrees: dict[str, dict[str, float]]


def image_sentence_edges(captions: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": dataset,
            "relation": "image_sentence",
            "source_id": captions["image_id"].astype(str).to_numpy(),
            "target_id": captions["caption_id"].astype(str).to_numpy(),
            "weight": 1.0,
        }
    )


def sentence_sentence_edges(captions: pd.DataFrame, dataset: str) -> pd.DataFrame:
    pairs = captions[["image_id", "caption_id"]].merge(
        captions[["image_id", "caption_id"]], on="image_id", suffixes=("_a", "_b")
    )
    pairs = pairs[pairs["caption_id_a"] != pairs["caption_id_b"]]
    return pd.DataFrame(
        {
            "dataset": dataset,
            "relation": "sentence_sentence",
            "source_id": pairs["caption_id_a"].astype(str).to_numpy(),
            "target_id": pairs["caption_id_b"].astype(str).to_numpy(),
            "weight": 1.0,
        }
    )


def _boxed_phrases(phrases: pd.DataFrame) -> pd.DataFrame:
    visual = phrases[phrases["phrase_type"] != "notvisual"]
    return visual.dropna(subset=["gt_x1", "gt_y1", "gt_x2", "gt_y2"])


def phrase_region_edges(
    phrases: pd.DataFrame,
    regions: pd.DataFrame,
    dataset: str,
    positive_iou: float = 0.6,
) -> pd.DataFrame:
    """Phrase → region edges (IoU ≥ ``positive_iou``), weight = the IoU; one image at a time,
    so memory follows the largest image's proposals, not the dataset."""
    boxed = _boxed_phrases(phrases)
    region_groups = {key: group for key, group in regions.groupby("image_id", sort=False)}
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for image_id, image_phrases in boxed.groupby("image_id", sort=False):
        image_regions = region_groups.get(image_id)
        if image_regions is None:
            continue
        iou = pairwise_iou(
            image_phrases[["gt_x1", "gt_y1", "gt_x2", "gt_y2"]].to_numpy(),
            image_regions[["x1", "y1", "x2", "y2"]].to_numpy(),
        )
        rows, cols = np.nonzero(iou >= positive_iou)
        sources.append(image_phrases["phrase_id"].to_numpy()[rows])
        targets.append(image_regions["region_id"].to_numpy()[cols])
        weights.append(iou[rows, cols])
    return pd.DataFrame(
        {
            "dataset": dataset,
            "relation": "phrase_region",
            "source_id": np.concatenate(sources) if sources else np.array([], dtype=object),
            "target_id": np.concatenate(targets) if targets else np.array([], dtype=object),
            "weight": np.concatenate(weights) if weights else np.array([], dtype=np.float64),
        }
    )


def region_region_edges(phrase_region: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Regions positive for the same phrase are neighbors (deduplicated, no self loops)."""
    pairs = phrase_region[["source_id", "target_id"]].merge(
        phrase_region[["source_id", "target_id"]], on="source_id", suffixes=("_a", "_b")
    )
    pairs = pairs[pairs["target_id_a"] != pairs["target_id_b"]]
    pairs = pairs.drop_duplicates(["target_id_a", "target_id_b"])
    return pd.DataFrame(
        {
            "dataset": dataset,
            "relation": "region_region",
            "source_id": pairs["target_id_a"].to_numpy(),
            "target_id": pairs["target_id_b"].to_numpy(),
            "weight": 1.0,
        }
    )


def _knn_chunks(
    features: np.ndarray, k: int, chunk: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact cosine kNN by chunked matrix products (faiss is used instead when installed)."""
    matrix = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    matrix = torch.nn.functional.normalize(matrix, dim=1)
    k = min(k, len(matrix) - 1)
    for start in range(0, len(matrix), chunk):
        block = matrix[start : start + chunk] @ matrix.T
        rows = torch.arange(start, start + len(block))
        block[torch.arange(len(block)), rows] = -float("inf")
        values, indices = block.topk(k, dim=1)
        yield rows.numpy(), indices.numpy(), values.numpy()


def knn_edges(
    ids: np.ndarray, features: np.ndarray, k: int, relation: str, dataset: str
) -> pd.DataFrame:
    try:
        import faiss  # optional: much faster on large data
    except ImportError:
        faiss = None
    frames = []
    if faiss is not None:
        matrix = np.ascontiguousarray(features, dtype=np.float32)
        faiss.normalize_L2(matrix)
        index = faiss.IndexFlatIP(matrix.shape[1])
        index.add(matrix)
        values, indices = index.search(matrix, min(k + 1, len(matrix)))
        rows = np.repeat(np.arange(len(matrix)), indices.shape[1]).reshape(indices.shape)
        keep = indices != rows
        frames.append((rows[keep], indices[keep], values[keep]))
    else:
        for rows, indices, values in _knn_chunks(features, k):
            frames.append((np.repeat(rows, indices.shape[1]), indices.ravel(), values.ravel()))
    sources = np.concatenate([f[0] for f in frames])
    targets = np.concatenate([f[1] for f in frames])
    weights = np.concatenate([f[2] for f in frames])
    return pd.DataFrame(
        {
            "dataset": dataset,
            "relation": relation,
            "source_id": ids[sources],
            "target_id": ids[targets],
            "weight": weights.astype(np.float64),
        }
    )


def degree_statistics(edges: pd.DataFrame) -> GraphStats:
    counts = edges["relation"].value_counts()
    degrees: dict[str, dict[str, float]] = {}
    for relation, group in edges.groupby("relation"):
        degree = group.groupby("source_id").size()
        degrees[str(relation)] = {
            "sources": int(len(degree)),
            "min": float(degree.min()),
            "mean": round(float(degree.mean()), 3),
            "max": float(degree.max()),
        }
    return GraphStats(edges={str(k): int(v) for k, v in counts.items()}, degrees=degrees)


def build_neighborhood_graph(
    captions: pd.DataFrame,
    phrases: pd.DataFrame,
    regions: pd.DataFrame | None,
    dataset: str,
    positive_iou: float = 0.6,
) -> pd.DataFrame:
    parts = [image_sentence_edges(captions, dataset), sentence_sentence_edges(captions, dataset)]
    if regions is not None and len(phrases):
        phrase_region = phrase_region_edges(phrases, regions, dataset, positive_iou)
        parts += [phrase_region, region_region_edges(phrase_region, dataset)]
    return pd.concat(parts, ignore_index=True)[NEIGHBOR_COLUMNS]
