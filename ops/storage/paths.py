"""Where every stored artifact lives, relative to the data root ``TWOBRANCH_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = "data"


class UnsafePathError(ValueError):
    """A name (of a dataset or a run) that would lead outside its data-root folder."""


def child_path(parent: Path, name: str) -> Path:
    """``parent / name``, refused unless it resolves to a direct child of ``parent`` named
    ``name``: a name with a separator, ``..``, an absolute path or a link out of ``parent`` never
    reaches a write or a delete."""
    path = parent / name
    resolved = path.resolve()
    if not name or resolved.parent != parent.resolve() or resolved.name != name:
        raise UnsafePathError(
            f"{name!r} does not name a folder inside {parent} (it resolves to {resolved}); refused"
        )
    return path


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else ``$TWOBRANCH_DATA``, else ``./data``."""
    chosen = root if root is not None else os.environ.get("TWOBRANCH_DATA", DEFAULT_DATA_ROOT)
    return Path(chosen).resolve()


def relative_to_root(root: Path, path: str | Path) -> str:
    """``path`` relative to the data root when it lies inside (so a moved root still works),
    else as given."""
    path = Path(path)
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def resolve_in_root(root: Path, stored: str) -> str:
    """A stored path made usable: a relative one is under the data root ``root``."""
    if not stored or Path(stored).is_absolute():
        return stored
    return str(root / stored)


def raw_dir(root: Path, dataset: str) -> Path:
    return child_path(root / "raw", dataset)


def tables_dir(root: Path, dataset: str) -> Path:
    """Parsed annotation tables (images, captions, phrases, rejects) as Parquet."""
    return child_path(root / "tables", dataset)


def dataset_table_file(root: Path, dataset: str, table: str) -> Path:
    return tables_dir(root, dataset) / f"{table}.parquet"


# Tables derived from a dataset live beside its parsed tables, not inside tables/<dataset>,
# which is replaced as a whole when the dataset is re-parsed.
DERIVED_FOLDERS = {"region_proposals": "proposals", "neighbors": "graph"}


def derived_table_file(root: Path, dataset: str, table: str) -> Path:
    """``<folder>/<dataset>/<table>.parquet`` of a table derived from a dataset."""
    return derived_dir(root, dataset, table) / f"{table}.parquet"


def derived_dir(root: Path, dataset: str, table: str) -> Path:
    """``<folder>/<dataset>`` of a table derived from a dataset."""
    return child_path(root / DERIVED_FOLDERS[table], dataset)


def results_dir(root: Path, table: str) -> Path:
    """One Parquet file per run of a result table."""
    return root / "results" / table


def result_file(root: Path, table: str, run_id: str) -> Path:
    return child_path(results_dir(root, table), f"{run_id}.parquet")


def reports_dir(root: Path) -> Path:
    return root / "reports"


def features_dir(root: Path, dataset: str) -> Path:
    return child_path(root / "features", dataset)


SNAPSHOTS = "snapshots"


def snapshots_dir(root: Path) -> Path:
    """Immutable sets of hard links, one per catalogue version, that the SQL views read."""
    return root / SNAPSHOTS


def staging_dir(root: Path) -> Path:
    """Work in progress of publishes: outside every folder a view reads, on the same
    filesystem as the data it replaces (so publishing is a rename)."""
    return root / ".staging"


def features_path(root: Path, dataset: str, kind: str, variant: str) -> Path:
    """``features/<dataset>/<kind>_<variant>.parquet`` (DESIGN.md storage contract)."""
    return features_dir(root, dataset) / f"{kind}_{variant}.parquet"


def checkpoint_dir(root: Path, run_id: str) -> Path:
    return child_path(root / "checkpoints", run_id)


def index_dir(root: Path, dataset: str) -> Path:
    """The dataset's retrieval index: embeddings, faiss indexes and what encodes a query."""
    return child_path(root / "index", dataset)


def report_dir(root: Path, run_id: str) -> Path:
    return child_path(reports_dir(root), run_id)


def results_db(root: Path) -> Path:
    return root / "results.duckdb"
