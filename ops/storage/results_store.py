"""The SQL face of the project: Parquet files per run, and ``results.duckdb`` as a catalogue of
views over them.

Why this shape: DuckDB lets one process write a database file while no other process may open
it, so a reader running ``twobranch sql`` during a training run would get a lock error. Here
nothing ever holds a writable connection on the published ``results.duckdb``: every result is
written as its own Parquet file (atomically, one file per run and table, so a reader never sees
half a run), and the catalogue of views is rebuilt in a temporary file and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ops.storage import snapshots
from ops.storage.atomic import atomic_path
from ops.storage.parquet_io import read_schema
from ops.storage.parquet_io import read_table as read_parquet_table
from ops.storage.paths import (
    dataset_table_file,
    derived_table_file,
    result_file,
    results_db,
    results_dir,
)

STRING = pa.string()
INT = pa.int64()
FLOAT = pa.float64()
BOOL = pa.bool_()
TIMESTAMP = pa.timestamp("us", tz="UTC")

# Per-run result tables (DESIGN.md "DuckDB contract"); one Parquet file per run under
# results/<table>/<run_id>.parquet.
RESULT_SCHEMAS: dict[str, pa.Schema] = {
    "training_runs": pa.schema(
        [
            ("run_id", STRING),
            ("task", STRING),
            ("network", STRING),
            ("dataset", STRING),
            ("config", STRING),
            ("device", STRING),
            ("started_at", TIMESTAMP),
            ("finished_at", TIMESTAMP),
            ("status", STRING),
            ("best_epoch", INT),
            ("best_val_score", FLOAT),
            ("checkpoint", STRING),
            ("features", STRING),
            # Processes that trained the run (torchrun's world size); NULL in rows stored
            # before it was recorded, which were single-process runs.
            ("world_size", INT),
            # JSON ValidationScope (ops.storage.validation_scope): the validation images and
            # protocol behind best_val_score; NULL in rows stored before it was recorded.
            ("validation_scope", STRING),
            # Why the run did or did not become champion (set when it finishes); NULL in rows
            # stored before it was recorded.
            ("champion_reason", STRING),
        ]
    ),
    "epoch_metrics": pa.schema(
        [
            ("run_id", STRING),
            ("epoch", INT),
            ("loss", FLOAT),
            ("loss_terms", STRING),
            ("val_score", FLOAT),
            ("val_metrics", STRING),
            ("lr", FLOAT),
            ("seconds", FLOAT),
        ]
    ),
    "retrieval_metrics": pa.schema(
        [
            ("run_id", STRING),
            ("dataset", STRING),
            ("split", STRING),
            ("method", STRING),
            ("protocol", STRING),
            ("fold", INT),
            ("direction", STRING),
            ("r1", FLOAT),
            ("r5", FLOAT),
            ("r10", FLOAT),
            ("median_rank", FLOAT),
            ("mean_rank", FLOAT),
            ("rsum", FLOAT),
            # Percent; NULL in rows stored before these were computed.
            ("r_precision", FLOAT),
            ("map_at_r", FLOAT),
        ]
    ),
    "retrieval_ranks": pa.schema(
        [
            ("run_id", STRING),
            ("method", STRING),
            ("protocol", STRING),
            ("fold", INT),
            ("direction", STRING),
            ("query_id", STRING),
            ("rank", INT),
            ("top1_id", STRING),
        ]
    ),
    "localization_metrics": pa.schema(
        [
            ("run_id", STRING),
            ("dataset", STRING),
            ("split", STRING),
            ("phrase_type", STRING),
            ("accuracy", FLOAT),
            ("upper_bound", FLOAT),
            ("n_phrases", INT),
        ]
    ),
    "localization_results": pa.schema(
        [
            ("run_id", STRING),
            ("phrase_id", STRING),
            ("phrase_type", STRING),
            ("chosen_region_id", STRING),
            ("iou", FLOAT),
            ("correct", BOOL),
        ]
    ),
    # Two-stage retrieval's weight search: one row per weight tried on the validation split,
    # filed under the similarity run (whose two_stage rows in retrieval_metrics use it).
    "two_stage_weights": pa.schema(
        [
            ("run_id", STRING),
            ("embedding_run_id", STRING),
            ("dataset", STRING),
            ("split", STRING),
            ("rerank_k", INT),
            ("weight", FLOAT),
            ("rsum", FLOAT),
            ("chosen", BOOL),
            # The test protocol the weight is used for, and the validation protocol it was
            # chosen under (the same one when validation has enough images, else ``all``).
            ("protocol", STRING),
            ("tuned_protocol", STRING),
        ]
    ),
    "champions": pa.schema(
        [
            ("task", STRING),
            ("network", STRING),
            ("dataset", STRING),
            ("run_id", STRING),
            ("val_score", FLOAT),
            ("previous_run_id", STRING),
            ("previous_val_score", FLOAT),
            ("promoted_at", TIMESTAMP),
            ("reason", STRING),
            # JSON {input name: fingerprint} of the files the champion was trained on; NULL in
            # rows stored before it was recorded.
            ("inputs", STRING),
            # JSON ValidationScope of val_score; NULL in rows stored before it was recorded.
            ("validation_scope", STRING),
        ]
    ),
}

# Columns renamed in the contract, old name → new. A validation score is R-sum for the
# image–sentence task but localization accuracy for the phrase task, so "rsum" named it wrongly
# for half the runs. Files stored before the rename keep the old name: reading merges the two,
# and the SQL views also serve the old name as an alias, until the next release drops it.
RENAMED_COLUMNS: dict[str, dict[str, str]] = {
    "training_runs": {"best_val_rsum": "best_val_score"},
    "epoch_metrics": {"val_rsum": "val_score"},
    "champions": {"val_rsum": "val_score", "previous_val_rsum": "previous_val_score"},
}

# Parsed dataset tables, one file per dataset under tables/<dataset>/<name>.parquet.
DATASET_SCHEMAS: dict[str, pa.Schema] = {
    "images": pa.schema(
        [
            ("dataset", STRING),
            ("image_id", STRING),
            ("split", STRING),
            ("path", STRING),
            ("width", INT),
            ("height", INT),
        ]
    ),
    "captions": pa.schema(
        [
            ("dataset", STRING),
            ("caption_id", STRING),
            ("image_id", STRING),
            ("split", STRING),
            ("caption_index", INT),
            ("text", STRING),
        ]
    ),
    "phrases": pa.schema(
        [
            ("dataset", STRING),
            ("phrase_id", STRING),
            ("caption_id", STRING),
            ("image_id", STRING),
            ("split", STRING),
            ("text", STRING),
            ("phrase_type", STRING),
            ("all_types", STRING),
            ("chain_id", STRING),
            ("first_word_index", INT),
            ("gt_x1", FLOAT),
            ("gt_y1", FLOAT),
            ("gt_x2", FLOAT),
            ("gt_y2", FLOAT),
            ("n_boxes", INT),
        ]
    ),
    "rejects": pa.schema(
        [
            ("dataset", STRING),
            ("stage", STRING),
            ("item_id", STRING),
            ("path", STRING),
            ("reason", STRING),
        ]
    ),
}

# Tables derived from a dataset (region proposals, the neighborhood graph), one file each.
DERIVED_SCHEMAS: dict[str, pa.Schema] = {
    "region_proposals": pa.schema(
        [
            ("image_id", STRING),
            ("region_id", STRING),
            ("x1", FLOAT),
            ("y1", FLOAT),
            ("x2", FLOAT),
            ("y2", FLOAT),
            ("source", STRING),
            ("rank", INT),
        ]
    ),
    "neighbors": pa.schema(
        [
            ("dataset", STRING),
            ("relation", STRING),
            ("source_id", STRING),
            ("target_id", STRING),
            ("weight", FLOAT),
        ]
    ),
}

SCHEMA_PLACEHOLDER = "_schema"


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema, name: str) -> pa.Table:
    missing = [f.name for f in schema if f.name not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    frame = frame[[f.name for f in schema]]
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_result(root: Path, table: str, run_id: str, frame: pd.DataFrame) -> Path:
    """Write (or replace) one run's rows of a result table, atomically."""
    path = result_file(root, table, run_id)
    _write_parquet(path, _to_arrow(frame, RESULT_SCHEMAS[table], table))
    return path


def write_table_file(path: Path, schema: pa.Schema, name: str, frame: pd.DataFrame) -> Path:
    """Write ``frame`` with the contract's ``schema`` for table ``name`` to ``path``, atomically."""
    _write_parquet(path, _to_arrow(frame, schema, name))
    return path


def read_result(root: Path, table: str, run_id: str | None = None) -> pd.DataFrame:
    """Rows of a result table: one run's, or every run's."""
    if run_id is not None:
        path = result_file(root, table, run_id)
        if not path.exists():
            return RESULT_SCHEMAS[table].empty_table().to_pandas()
        return _current_names(read_parquet_table(path), table)
    folder = results_dir(root, table)
    files = sorted(p for p in folder.glob("*.parquet") if p.stem != SCHEMA_PLACEHOLDER)
    if not files:
        return RESULT_SCHEMAS[table].empty_table().to_pandas()
    frames = [_current_names(read_parquet_table(p), table) for p in files]
    return pd.concat(frames, ignore_index=True)


def _current_names(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """A stored file's rows under the contract's current column names."""
    for old, new in RENAMED_COLUMNS.get(table, {}).items():
        if old in frame.columns:
            legacy = frame.pop(old)
            frame[new] = frame[new].fillna(legacy) if new in frame.columns else legacy
    return frame


def _placeholder_schema(table: str, schema: pa.Schema) -> pa.Schema:
    """The contract's schema plus the old names of renamed columns, so that every view can name
    them whether or not a file stored before the rename exists."""
    for old, new in RENAMED_COLUMNS.get(table, {}).items():
        schema = schema.append(pa.field(old, schema.field(new).type))
    return schema


def _placeholders(root: Path) -> list[tuple[Path, pa.Schema]]:
    return (
        [
            (result_file(root, t, SCHEMA_PLACEHOLDER), _placeholder_schema(t, s))
            for t, s in RESULT_SCHEMAS.items()
        ]
        + [(dataset_table_file(root, SCHEMA_PLACEHOLDER, t), s) for t, s in DATASET_SCHEMAS.items()]
        + [(derived_table_file(root, SCHEMA_PLACEHOLDER, t), s) for t, s in DERIVED_SCHEMAS.items()]
    )


def _placeholder_is_current(path: Path, schema: pa.Schema) -> bool:
    return path.exists() and read_schema(path).remove_metadata().equals(schema)


def _ensure_placeholders(root: Path) -> None:
    """An empty file with the contract's schema keeps every view valid before the first run,
    and gives a column added to the contract a type (NULL in files stored before it)."""
    for path, schema in _placeholders(root):
        if not _placeholder_is_current(path, schema):
            _write_parquet(path, schema.empty_table())


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# "[!.]*" rather than "*": DuckDB's glob also matches hidden names, and hidden names are what
# temporary files and interrupted publishes leave behind; only committed files are read.
VISIBLE = "[!.]*"


def _read_all(pattern: Path, renamed: Mapping[str, str] | None = None) -> str:
    source = f"read_parquet({_quote(pattern)}, union_by_name = true)"
    if not renamed:
        return f"SELECT * FROM {source}"
    merged = {old: f"coalesce({new}, {old})" for old, new in renamed.items()}
    return (
        f"SELECT * EXCLUDE ({', '.join(renamed)}) "
        f"REPLACE ({', '.join(f'{merged[old]} AS {new}' for old, new in renamed.items())}), "
        f"{', '.join(f'{merged[old]} AS {old}' for old in renamed)} FROM {source}"
    )


def _resolved_image_paths(source: str, data_root: Path) -> str:
    """The images view: ``path`` as stored (relative to the data root for images inside it)
    made absolute under ``data_root``, which the catalogue is rebuilt for when it moves."""
    prefix = _quote(f"{data_root}/")
    resolved = (
        f"CASE WHEN path IS NULL OR path = '' OR starts_with(path, '/') THEN path "
        f"ELSE {prefix} || path END"
    )
    return f"SELECT * REPLACE ({resolved} AS path) FROM ({source})"


def view_definitions(root: Path, data_root: Path | None = None) -> dict[str, str]:
    """``CREATE VIEW`` bodies for every contract table, keyed by view name, over the files
    under ``root`` (a snapshot generation, or the data root itself); image paths resolve
    against ``data_root`` (default ``root``)."""
    views: dict[str, str] = {}
    for table in DATASET_SCHEMAS:
        views[table] = _read_all(dataset_table_file(root, VISIBLE, table))
    views["images"] = _resolved_image_paths(views["images"], data_root or root)
    for table in DERIVED_SCHEMAS:
        views[table] = _read_all(derived_table_file(root, VISIBLE, table))
    for table in RESULT_SCHEMAS:
        name = f"{table}_raw" if table == "training_runs" else table
        pattern = result_file(root, table, VISIBLE)
        views[name] = _read_all(pattern, RENAMED_COLUMNS.get(table))
    views["training_runs"] = (
        "SELECT r.*, coalesce(c.run_id IS NOT NULL, false) AS champion "
        "FROM training_runs_raw r LEFT JOIN champions c "
        "ON r.run_id = c.run_id AND r.task = c.task AND r.network = c.network "
        "AND r.dataset = c.dataset"
    )
    return views


# The catalogue records the root its views point at, the layout of those views and the
# snapshot generation they read, so a copied or moved data root, or a catalogue written by an
# older layout, is rebuilt before use. (Views keep absolute paths so that
# ``duckdb results.duckdb`` works from any directory.)
CATALOGUE_MARKER = "_catalogue"
CATALOGUE_FORMAT = 5
# A reader whose catalogue is retired before it takes its lease opens the newer one.
LEASE_ATTEMPTS = 20


def publish_catalogue(root: Path) -> Path:
    """Snapshot every file the views read into a new generation (see
    :mod:`ops.storage.snapshots`), build ``results.duckdb`` (views only) over it in a temporary
    file, rename it into place, then remove the retired generations no reader holds."""
    root.mkdir(parents=True, exist_ok=True)
    _ensure_placeholders(root)
    target = results_db(root)
    with snapshots.publishing(root) as generation:
        folder = snapshots.build_generation(root, generation)
        views = view_definitions(folder, root)
        views[CATALOGUE_MARKER] = (
            f"SELECT {_quote(root)} AS data_root, {CATALOGUE_FORMAT} AS format, "
            f"{_quote(generation)} AS generation"
        )
        with atomic_path(target) as tmp:
            tmp.unlink()  # DuckDB refuses to open an empty file as a database
            con = duckdb.connect(str(tmp))
            try:
                # Dependency order: champions and training_runs_raw before training_runs.
                for name in sorted(views, key=lambda n: n == "training_runs"):
                    con.execute(f"CREATE VIEW {name} AS {views[name]}")
                con.execute("CHECKPOINT")
            finally:
                con.close()
            with contextlib.suppress(FileNotFoundError):
                Path(str(tmp) + ".wal").unlink()
    return target


def _catalogue_marker(root: Path) -> tuple[str, int, str] | None:
    try:
        con = duckdb.connect(str(results_db(root)), read_only=True)
    except duckdb.Error:
        return None
    try:
        return catalogue_marker(con)
    finally:
        con.close()


def catalogue_marker(con: duckdb.DuckDBPyConnection) -> tuple[str, int, str] | None:
    """(data root, layout format, snapshot generation) of an open catalogue; None for a
    catalogue of an older layout."""
    try:
        rows = con.execute(f"SELECT * FROM {CATALOGUE_MARKER}").fetchall()
    except duckdb.CatalogException:
        return None  # written before catalogues carried a marker
    if len(rows) != 1 or len(rows[0]) < 3:
        return None
    return rows[0][0], rows[0][1], rows[0][2]


def catalogue_is_current(root: Path) -> bool:
    """True when ``results.duckdb`` exists, was built for this root in the current layout, its
    snapshot generation is there, and every view's placeholder file is there with the
    contract's current schema."""
    if not results_db(root).exists():
        return False
    if not all(_placeholder_is_current(path, schema) for path, schema in _placeholders(root)):
        return False
    marker = _catalogue_marker(root)
    if marker is None or marker[:2] != (str(root), CATALOGUE_FORMAT):
        return False
    return snapshots.generation_dir(root, marker[2]).is_dir()


def ensure_catalogue(root: Path) -> Path:
    if not catalogue_is_current(root):
        return publish_catalogue(root)
    return results_db(root)


def connect_leased(
    root: Path, connect: Callable[[], duckdb.DuckDBPyConnection]
) -> tuple[duckdb.DuckDBPyConnection, int | None]:
    """A connection from ``connect()`` to the current catalogue, and a reader lease on the
    snapshot generation it reads (:func:`ops.storage.snapshots.hold`); the caller closes the
    connection and then releases the lease."""
    for _ in range(LEASE_ATTEMPTS):
        con = connect()
        marker = catalogue_marker(con)
        lease = snapshots.hold(root, marker[2]) if marker else None
        if lease is not None or marker is None:
            return con, lease
        con.close()  # retired before the lease was taken: the next catalogue is in place
    raise RuntimeError(f"{results_db(root)} names snapshot files that are gone; run again")


def utc_now() -> pd.Timestamp:
    return pd.Timestamp(time.time(), unit="s", tz="UTC").floor("us")


def to_json(value: Mapping | list) -> str:
    return json.dumps(value, sort_keys=True, default=str)
