"""A ``.npy`` copy of a feature file's matrix, whose rows training and evaluation read.

Region features at the paper's settings run to ~100 GB; reading them into memory would need
that much RAM (and each split's copy as much again). The first use of a feature file writes
its matrix, row group by row group, to ``.cache/<file stem>.<size>-<mtime>.npy`` beside it
(atomically); later uses read just the rows they need from that file
(:mod:`ops.storage.row_files`), so pages stay evictable page cache rather than process
memory. A changed feature file gets a new cache file (its size or modification time differ)
and the stale one is removed. The cache keeps the file's stored dtype (float16 features take
half the bytes here too); rows are handed out as float32.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ops.storage.atomic import atomic_path
from ops.storage.parquet_io import (
    FEATURE_COLUMN,
    parquet_file,
    read_row_group,
    read_table,
    stored_dtype,
)
from ops.storage.row_files import NpyRowFile, RowSubset

CACHE_FOLDER = ".cache"


def cache_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    stat = path.stat()
    return path.parent / CACHE_FOLDER / f"{path.stem}.{stat.st_size}-{stat.st_mtime_ns}.npy"


def feature_rows(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, RowSubset]:
    """(id columns, every row of the feature file as a :class:`RowSubset` over its cache
    file): nothing of the matrix is read until rows are taken, and nothing stays mapped.
    The rows are known to be finite (the cache is checked as it is written), and come back as
    float32 whatever the file stores."""
    parquet = parquet_file(path)
    id_columns = [name for name in parquet.schema_arrow.names if name != FEATURE_COLUMN]
    ids = read_table(path, id_columns)
    return ids, feature_matrix(path, len(ids))


def feature_matrix(path: str | os.PathLike[str], rows: int | None = None) -> RowSubset:
    """Every row of the feature file (``rows`` of them, when the caller read its ids) as a
    :class:`RowSubset` over its cache file, which is written on first use."""
    path = Path(path)
    parquet = parquet_file(path)
    rows = parquet.metadata.num_rows if rows is None else rows
    target = cache_path(path)
    if not target.exists():
        with _building(target):
            if not target.exists():  # another process may have built it meanwhile
                _write_cache(parquet, path, target)
    matrix = NpyRowFile(target)
    if matrix.shape[0] != rows:
        raise ValueError(f"{target}: {matrix.shape[0]} rows but {path} has {rows}")
    return RowSubset(matrix, finite_checked=True, dtype=np.float32)


@contextlib.contextmanager
def _building(target: Path) -> Iterator[None]:
    """Hold the cache folder's lock for ``target``'s feature file: steps that run at once (two
    training steps, or the ranks of one) build a cache once, and none removes a file another is
    writing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name.rsplit('.', 2)[0]}.lock"
    with open(lock, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_cache(parquet: pq.ParquetFile, source: Path, target: Path) -> None:
    dim = parquet.schema_arrow.field(FEATURE_COLUMN).type.list_size
    rows = parquet.metadata.num_rows
    for stale in target.parent.glob(f"{source.stem}.*.npy"):
        with contextlib.suppress(OSError):
            stale.unlink()
    dtype = stored_dtype(parquet.schema_arrow)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    # Plain writes, not a memory map: the pages of a written map stay resident in the process
    # (peak RSS as large as the cache file), while written file pages are the kernel's.
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (rows, dim)})
        start = 0
        for group in range(parquet.num_row_groups):
            column = read_row_group(parquet, source, group, [FEATURE_COLUMN]).column(0)
            block = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
            block = np.ascontiguousarray(block.reshape(-1, dim), dtype=dtype)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise ValueError(f"{source}: feature row {row} holds NaN or Inf")
            handle.write(memoryview(block).cast("B"))
            start += len(block)
        if start != rows:
            raise ValueError(f"{source}: {start} feature rows read, its footer says {rows}")
