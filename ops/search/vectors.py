"""faiss indexes over unit-length embeddings: inner product, exact (``IndexFlatIP``) or
approximate (IVF, HNSW), and search restricted to one contiguous range of ids (a split)."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from ops.search.settings import IndexSettings

# faiss warns below 39 training points per IVF cell; 64 keeps k-means quick and stable.
POINTS_PER_CELL = 64


def ivf_lists(settings: IndexSettings, n_items: int) -> int:
    """Cells of an IVF index over ``n_items``: the setting, else about sqrt(n), and never so
    many that a cell gets fewer than ``POINTS_PER_CELL`` training points."""
    wanted = settings.ivf_lists or round(math.sqrt(n_items))
    return max(1, min(wanted, n_items // POINTS_PER_CELL))


def new_index(settings: IndexSettings, dim: int, n_items: int) -> faiss.Index:
    """An empty index of ``settings.index_type`` for ``n_items`` vectors of ``dim``."""
    if settings.index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if settings.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        return index
    # faiss's Python wrapper keeps the quantizer alive as long as the index.
    quantizer = faiss.IndexFlatIP(dim)
    return faiss.IndexIVFFlat(
        quantizer, dim, ivf_lists(settings, n_items), faiss.METRIC_INNER_PRODUCT
    )


def training_rows(settings: IndexSettings, n_items: int, seed: int = 0) -> np.ndarray | None:
    """The rows an IVF index is trained on (a seeded sample), or None when nothing trains."""
    if settings.index_type != "ivf":
        return None
    size = min(n_items, POINTS_PER_CELL * ivf_lists(settings, n_items))
    rows = np.random.default_rng(seed).choice(n_items, size=size, replace=False)
    return np.sort(rows)


def as_float32(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def read_index(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    id_range: tuple[int, int] | None = None,
    parameters: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the ``k`` best items per query, best first; ``id_range`` keeps only
    ids in ``[start, stop)``. Ids are -1 where fewer than ``k`` items qualify."""
    parameters = parameters or {}
    if "nprobe" in parameters:
        params = faiss.SearchParametersIVF()
        params.nprobe = parameters["nprobe"]
    elif "efSearch" in parameters:
        params = faiss.SearchParametersHNSW()
        params.efSearch = parameters["efSearch"]
    else:
        params = faiss.SearchParameters()
    selector = None
    if id_range is not None:
        # Kept referenced until the search returns: faiss does not own it.
        selector = faiss.IDSelectorRange(int(id_range[0]), int(id_range[1]))
        params.sel = selector
    scores, ids = index.search(as_float32(queries), k, params=params)
    del selector
    return scores, ids
