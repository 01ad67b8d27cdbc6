"""The neighborhood graph as the training input: the training split's positives and
neighborhoods are taken from the graph's edges, not recomputed from the tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ops.features.region_table import positions
from ops.graph.build import IMAGE_SENTENCE, KNN_SENTENCE, PHRASE_REGION
from ops.graph.store import read_relation
from ops.storage.parquet_io import read_arrow
from ops.training.data import ImageSentenceData
from ops.training.inputs import ImageSentenceSplit, PhraseRegionSplit


def _positions(ids: np.ndarray, wanted: pd.Series) -> np.ndarray:
    """Row of each of ``wanted`` in ``ids`` (−1 where absent)."""
    return pd.Index(ids).get_indexer(wanted.to_numpy())


def image_sentence_from_graph(
    split: ImageSentenceSplit, graph_path: str | Path, with_knn: bool = False
) -> ImageSentenceSplit:
    """The training split with the graph's positives: each caption's image is the graph's
    ``image_sentence`` edge (captions without one are left out), and, ``with_knn``, the
    graph's ``knn_sentence`` edges as each caption's kNN neighborhood. Captions stay grouped
    by image."""
    edges = read_relation(graph_path, IMAGE_SENTENCE)
    caption_rows = _positions(split.caption_ids, edges["target_id"])
    image_rows = _positions(split.image_ids, edges["source_id"])
    known = (caption_rows >= 0) & (image_rows >= 0)
    caption_rows, image_rows = caption_rows[known], image_rows[known]
    order = np.lexsort((caption_rows, image_rows))
    caption_rows, image_rows = caption_rows[order], image_rows[order]
    caption_ids = split.caption_ids[caption_rows]
    knn_start = knn_rows = np.zeros(0, dtype=np.int64)
    if with_knn:
        knn_start, knn_rows = _knn_csr(read_relation(graph_path, KNN_SENTENCE), caption_ids)
    data = ImageSentenceData(
        image_features=split.data.image_features,
        text_features=split.data.text_features[caption_rows],
        caption_image=image_rows,
        knn_start=knn_start,
        knn_rows=knn_rows,
    )
    return ImageSentenceSplit(data=data, image_ids=split.image_ids, caption_ids=caption_ids)


def _knn_csr(edges: pd.DataFrame, caption_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (start, rows) over ``caption_ids`` of the kNN edges between them, most similar
    first."""
    source = _positions(caption_ids, edges["source_id"])
    target = _positions(caption_ids, edges["target_id"])
    known = (source >= 0) & (target >= 0)
    weight = edges["weight"].to_numpy()[known]
    source, target = source[known], target[known]
    order = np.lexsort((-weight, source))
    counts = np.bincount(source, minlength=len(caption_ids))
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return start, target[order].astype(np.int64)


def phrase_region_from_graph(split: PhraseRegionSplit, graph_path: str | Path) -> PhraseRegionSplit:
    """The training split with the graph's ``phrase_region`` edges as its positive pairs
    (edges whose phrase or region the split lacks are left out)."""
    # As Arrow columns: a Python string per edge would grow with the training split.
    edges = read_arrow(
        graph_path, ["source_id", "target_id"], filters=[("relation", "=", PHRASE_REGION)]
    )
    phrase_rows = positions(split.phrase_ids, edges.column("source_id"))
    region_rows = positions(split.region_ids, edges.column("target_id"))
    known = (phrase_rows >= 0) & (region_rows >= 0)
    data = replace(
        split.data, positive_phrase=phrase_rows[known], positive_region=region_rows[known]
    )
    return replace(split, data=data)
