"""Where every stored artifact lives, relative to the data root ``TWOBRANCH_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = "data"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else ``$TWOBRANCH_DATA``, else ``./data``."""
    chosen = root if root is not None else os.environ.get("TWOBRANCH_DATA", DEFAULT_DATA_ROOT)
    return Path(chosen).resolve()


def raw_dir(root: Path, dataset: str) -> Path:
    return root / "raw" / dataset


def tables_dir(root: Path, dataset: str) -> Path:
    """Parsed annotation tables (images, captions, phrases, rejects) as Parquet."""
    return root / "tables" / dataset


def features_dir(root: Path, dataset: str) -> Path:
    return root / "features" / dataset


def staging_dir(root: Path) -> Path:
    """Work in progress of publishes: outside every folder a view reads, on the same
    filesystem as the data it replaces (so publishing is a rename)."""
    return root / ".staging"


def features_path(root: Path, dataset: str, kind: str, variant: str) -> Path:
    """``features/<dataset>/<kind>_<variant>.parquet`` (DESIGN.md storage contract)."""
    return features_dir(root, dataset) / f"{kind}_{variant}.parquet"


def checkpoint_dir(root: Path, run_id: str) -> Path:
    return root / "checkpoints" / run_id


def index_dir(root: Path, dataset: str) -> Path:
    """The dataset's retrieval index: embeddings, faiss indexes and what encodes a query."""
    return root / "index" / dataset


def report_dir(root: Path, run_id: str) -> Path:
    return root / "reports" / run_id


def results_db(root: Path) -> Path:
    return root / "results.duckdb"
