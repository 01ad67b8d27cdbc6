"""Publishing a parsed dataset's tables (images, captions, phrases, rejects) as one unit.

The four Parquet files are written into a staging folder and swapped in with renames, so a
failure while writing leaves the previous materialization in place, and readers see either the
old set or the new set of tables.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd

from ops.paths import tables_dir
from ops.results_store import DATASET_SCHEMAS, dataset_table_file, write_dataset_table
from ops.tables import DatasetTables

TABLE_NAMES = ("images", "captions", "phrases", "rejects")


def publish_dataset_tables(root: Path, tables: DatasetTables) -> Path:
    final = tables_dir(root, tables.dataset)
    staging_name = f".{tables.dataset}.staging-{uuid.uuid4().hex[:8]}"
    staging = final.parent / staging_name
    try:
        for name in TABLE_NAMES:
            frame = getattr(tables, name)
            write_dataset_table(root, staging_name, name, _for_storage(frame, name))
        retired = final.parent / f".{tables.dataset}.retired-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(retired)
        staging.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


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


def load_dataset_table(root: Path, dataset: str, name: str) -> pd.DataFrame:
    path = dataset_table_file(root, dataset, name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialize the dataset assets for {dataset!r} first"
        )
    return pd.read_parquet(path)


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
