"""Splitting per-image extraction into shards, and joining the shards' files again.

A shard is a contiguous range of rows of the item list (images, or images with proposals).
Each shard writes its own Parquet file under ``.shards/`` next to the final file; the merge
streams the shard files, in shard order, into the final file (row group by row group, so
memory does not grow with the dataset) and renames it into place atomically. Because shards
are contiguous and merged in order, the merged file has the same rows in the same order as
an unsharded extraction. The merge also stores the features in the asset's ``feature_dtype``
(shards are written in float32; float16 halves the final file and its cache).

Shard files live in a folder named after the run that made them (``tag``), so a re-executed
run that reuses a finished shard merges exactly the file that shard wrote, and two runs never
write to the same shard file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from ops.storage.atomic import atomic_path
from ops.storage.parquet_io import (
    FEATURE_COLUMN,
    FeatureDtype,
    feature_file_writer,
    feature_schema,
    parquet_file,
    read_row_group,
    read_schema,
    stored_dtype,
    stored_matrix,
)

SHARD_FOLDER = ".shards"
ABANDONED_AFTER_S = 24 * 3600
_SAFE_TAG = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ShardSpec:
    """Rows ``[start, stop)`` of ``total`` items, shard ``index`` of ``count``."""

    index: int
    count: int
    start: int
    stop: int
    total: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        """A name usable as a Dagster mapping key and a file name: ``shard_003_of_008``."""
        return f"shard_{self.index:03d}_of_{self.count:03d}"

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ShardSpec:
        return cls(
            **{name: int(values[name]) for name in ("index", "count", "start", "stop", "total")}
        )


def plan_shards(total: int, count: int) -> list[ShardSpec]:
    """``count`` contiguous ranges covering ``range(total)``, sizes differing by at most one.

    Fewer shards come back when there are fewer items than shards (no empty shards), and one
    empty shard when there are no items, so a step always runs and reports zero rows.
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    if total < 0:
        raise ValueError(f"item count must be non-negative, got {total}")
    count = max(1, min(count, total))
    bounds = [total * i // count for i in range(count + 1)]
    return [
        ShardSpec(index=i, count=count, start=bounds[i], stop=bounds[i + 1], total=total)
        for i in range(count)
    ]


def shard_file(final_path: str | os.PathLike[str], spec: ShardSpec, tag: str) -> Path:
    """``<folder>/.shards/<final stem>/<tag>/<shard key>.parquet`` beside ``final_path``."""
    final_path = Path(final_path)
    safe_tag = _SAFE_TAG.sub("_", tag) or "untagged"
    return final_path.parent / SHARD_FOLDER / final_path.stem / safe_tag / f"{spec.key}.parquet"


def merge_shard_files(
    shard_paths: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    remove_shards: bool = True,
    dtype: FeatureDtype | None = None,
) -> int:
    """Concatenate ``shard_paths`` in the given order into ``out_path``; returns the row count.

    Every shard must have the first shard's schema (columns, types and file metadata); a
    mismatch names the shard and leaves ``out_path`` untouched. ``dtype`` stores the feature
    column in that dtype (None: as the shards hold it). With ``remove_shards`` the shard files
    (and their folder, once empty) are deleted after the merged file is in place.
    """
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise ValueError(f"{out_path}: no shard files to merge")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"shard files missing (was a shard step skipped?): {missing}")
    schema = read_schema(paths[0])
    cast = dtype is not None and stored_dtype(schema) != dtype
    if len(paths) == 1 and remove_shards and not cast:
        # One shard is already the whole file: move it into place instead of copying it.
        rows = parquet_file(paths[0]).metadata.num_rows
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(paths[0], out_path)
        remove_shard_files(paths)
        return rows
    out_schema = _stored_schema(schema, dtype) if cast else schema
    rows = 0
    with atomic_path(out_path) as tmp:
        with feature_file_writer(tmp, out_schema) as writer:
            for path in paths:
                parquet = parquet_file(path)
                if not parquet.schema_arrow.equals(schema, check_metadata=True):
                    raise ValueError(
                        f"{path}: schema differs from {paths[0].name} "
                        f"({parquet.schema_arrow} vs {schema}); shards of one asset must come "
                        "from one configuration"
                    )
                for group in range(parquet.num_row_groups):
                    table = read_row_group(parquet, path, group)
                    if cast:
                        table = _cast_features(table, out_schema, str(out_path), rows)
                    writer.write_table(table)
                    rows += table.num_rows
    if remove_shards:
        remove_shard_files(paths)
    return rows


def _stored_schema(schema: pa.Schema, dtype: FeatureDtype) -> pa.Schema:
    ids = {field.name: field.type for field in schema if field.name != FEATURE_COLUMN}
    dim = schema.field(FEATURE_COLUMN).type.list_size
    return feature_schema(ids, dim, dtype).with_metadata(schema.metadata)


def _cast_features(table: pa.Table, schema: pa.Schema, name: str, first_row: int) -> pa.Table:
    feature = schema.field(FEATURE_COLUMN).type
    dtype = str(stored_dtype(schema))
    values = table.column(FEATURE_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = values.reshape(-1, feature.list_size)
    column = stored_matrix(matrix, feature.list_size, dtype, name, first_row)  # type: ignore[arg-type]
    index = table.schema.get_field_index(FEATURE_COLUMN)
    return table.set_column(index, schema.field(FEATURE_COLUMN), column)


def remove_shard_files(paths: Sequence[Path]) -> None:
    """Delete shard files, then their run, asset and ``.shards`` folders once empty."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for run_folder in {p.parent for p in paths}:
        for folder in (run_folder, run_folder.parent, run_folder.parent.parent):
            with contextlib.suppress(OSError):
                folder.rmdir()  # succeeds only when empty


def remove_abandoned_shards(
    final_path: str | os.PathLike[str], older_than_s: float = ABANDONED_AFTER_S
) -> int:
    """Delete shard folders of ``final_path`` untouched for ``older_than_s`` seconds (left by
    runs that failed and were never re-executed); returns how many were removed. Younger
    folders may belong to a run still in progress and are kept."""
    root = Path(final_path).parent / SHARD_FOLDER / Path(final_path).stem
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in root.iterdir():
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if folder.is_dir() and max(newest, folder.stat().st_mtime) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    with contextlib.suppress(OSError):
        root.rmdir()
        root.parent.rmdir()
    return removed
