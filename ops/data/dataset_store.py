"""Publishing a parsed dataset's tables (images, captions, phrases, rejects) as one unit.

The four Parquet files are written into a staging folder outside ``tables/`` (see
:mod:`ops.storage.staging`), then swapped with ``tables/<dataset>`` in one step
(:func:`ops.storage.atomic.replace_directory`). At every instant, also after a crash at any point,
``tables/<dataset>`` holds the previous set of tables or the new one: never both, never a mix.
Image paths inside the data root are stored relative to it and resolved when read
(:func:`load_dataset_table`, and the ``images`` SQL view), so a moved or copied root works.
The catalogue is then rebuilt over a new snapshot of the files (:mod:`ops.storage.snapshots`),
so SQL shows the new set from the next query on, while queries already running keep the old.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ops.data.tables import DatasetTables
from ops.storage.atomic import replace_directory
from ops.storage.parquet_io import read_table
from ops.storage.paths import dataset_table_file, relative_to_root, resolve_in_root, tables_dir
from ops.storage.results_store import DATASET_SCHEMAS, publish_catalogue, write_table_file
from ops.storage.staging import staging_folder

TABLE_NAMES = ("images", "captions", "phrases", "rejects")
# Where versions before the staging area staged and retired folders, inside tables/ itself.
LEGACY_LEFTOVERS = (".*.staging-*", ".*.retired-*")


def publish_dataset_tables(root: Path, tables: DatasetTables) -> Path:
    final = tables_dir(root, tables.dataset)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_legacy_leftovers(final.parent)
    with staging_folder(root, f"tables-{tables.dataset}") as staging:
        fresh = staging / "new"
        for name in TABLE_NAMES:
            frame = _for_storage(getattr(tables, name), name)
            if name == "images":
                frame["path"] = [_stored(root, path) for path in frame["path"]]
            write_table_file(fresh / f"{name}.parquet", DATASET_SCHEMAS[name], name, frame)
        replace_directory(fresh, final, previous=staging / "previous")
    publish_catalogue(root)
    return final


def _remove_legacy_leftovers(tables_root: Path) -> None:
    for pattern in LEGACY_LEFTOVERS:
        for leftover in tables_root.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _for_storage(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    frame = frame.copy()
    for field in DATASET_SCHEMAS[name]:
        if field.name not in frame.columns:
            continue
        if str(field.type) == "int64":
            frame[field.name] = frame[field.name].astype("Int64")
        elif str(field.type) == "string":
            frame[field.name] = (
                frame[field.name].astype("object").where(frame[field.name].notna(), None)
            )
    return frame


def _stored(root: Path, path: object) -> object:
    return relative_to_root(root, path) if isinstance(path, str) and path else path


def load_dataset_table(root: Path, dataset: str, name: str) -> pd.DataFrame:
    """One of the dataset's tables; image paths resolved against the data root ``root``."""
    path = dataset_table_file(root, dataset, name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialize the dataset assets for {dataset!r} first"
        )
    frame = read_table(path)
    if name == "images":
        frame["path"] = [
            resolve_in_root(root, path) if isinstance(path, str) else path for path in frame["path"]
        ]
    return frame


def tables_fingerprint(tables: DatasetTables) -> str:
    """A content hash of the parsed tables: equal exactly when the data is the same."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("images", "captions", "phrases"):
        frame = getattr(tables, name).drop(columns=["path"], errors="ignore")
        hashed = pd.util.hash_pandas_object(frame.astype("string"), index=False)
        digest.update(name.encode())
        digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()
