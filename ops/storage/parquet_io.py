"""Parquet storage for tables and feature matrices.

Feature files hold one row per item: id columns plus ``feature`` as
``fixed_size_list<float32>[D]`` (or ``<float16>``: :data:`FeatureDtype`; readers hand back
float32 either way). They are written in row groups as the data streams in, to a
temporary path that is renamed only when the writer closes cleanly, so a crash never leaves a
partial file under the final name.

Every Parquet read of the project goes through this module (:func:`read_table`,
:func:`read_arrow`, :func:`read_schema`, :func:`parquet_file`, :func:`iter_batches` and the
feature readers), so a truncated or corrupt file is one :class:`ParquetReadError` that names it
and says what to do, not Arrow's "Could not open Parquet input source '<Buffer>'".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ops.storage.atomic import atomic_path

FEATURE_COLUMN = "feature"
# How image and region features are stored: float16 halves their disk and page cache (and the
# cache file beside them); every reader computes in float32.
FeatureDtype = Literal["float32", "float16"]
FEATURE_DTYPES: tuple[str, ...] = get_args(FeatureDtype)
_ARROW_FLOATS = {"float32": pa.float32(), "float16": pa.float16()}


class ParquetReadError(ValueError):
    """A Parquet file that cannot be read; the message names it and the way out."""


@contextlib.contextmanager
def reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn Arrow's errors while reading ``path`` into a ParquetReadError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        raise ParquetReadError(
            f"{os.fspath(path)}: not a readable Parquet file ({detail}); it is truncated or "
            "corrupt: delete it and materialize again the asset that writes it"
        ) from error


def read_arrow(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    filters: list[tuple[str, str, object]] | None = None,
) -> pa.Table:
    with reading(path):
        return pq.read_table(
            path, columns=None if columns is None else list(columns), filters=filters
        )


def read_table(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    filters: list[tuple[str, str, object]] | None = None,
) -> pd.DataFrame:
    """A Parquet file (or some of its columns, or its rows that pass ``filters``) as a
    DataFrame."""
    table = read_arrow(path, columns, filters)
    with reading(path):
        return table.to_pandas()


def read_schema(path: str | os.PathLike[str]) -> pa.Schema:
    with reading(path):
        return pq.read_schema(path)


def parquet_file(path: str | os.PathLike[str]) -> pq.ParquetFile:
    """An open Parquet file, for its metadata and row groups (read them with
    :func:`iter_batches` to have errors name the file)."""
    with reading(path):
        return pq.ParquetFile(path)


def read_row_group(
    parquet: pq.ParquetFile,
    path: str | os.PathLike[str],
    group: int,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Row group ``group`` of the open file ``parquet`` (read from ``path``)."""
    with reading(path):
        return parquet.read_row_group(group, columns=None if columns is None else list(columns))


def iter_batches(
    path: str | os.PathLike[str],
    batch_size: int = 65_536,
    columns: Sequence[str] | None = None,
    parquet: pq.ParquetFile | None = None,
) -> Iterator[pa.RecordBatch]:
    """The file's record batches in order; ``parquet`` reuses an already open file."""
    opened = parquet if parquet is not None else parquet_file(path)
    with reading(path):
        yield from opened.iter_batches(
            batch_size=batch_size, columns=None if columns is None else list(columns)
        )


def feature_schema(
    id_columns: Mapping[str, pa.DataType], dim: int, dtype: FeatureDtype = "float32"
) -> pa.Schema:
    if dtype not in _ARROW_FLOATS:
        raise ValueError(f"feature dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    fields = [pa.field(name, kind, nullable=False) for name, kind in id_columns.items()]
    fields.append(pa.field(FEATURE_COLUMN, pa.list_(_ARROW_FLOATS[dtype], dim), nullable=False))
    return pa.schema(fields)


def stored_dtype(schema: pa.Schema) -> np.dtype:
    """The numpy dtype a feature file stores its values in."""
    return np.dtype(schema.field(FEATURE_COLUMN).type.value_type.to_pandas_dtype())


def stored_matrix(
    matrix: np.ndarray, dim: int, dtype: FeatureDtype, name: str, first_row: int = 0
) -> pa.FixedSizeListArray:
    """``matrix`` as the feature column in ``dtype``. A value beyond float16's range would
    become Inf: that is an error naming ``name`` and the row, never a stored Inf."""
    with np.errstate(over="ignore"):  # an overflow is reported below, naming the row
        matrix = np.ascontiguousarray(matrix, dtype=np.dtype(dtype))
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"feature chunk has shape {matrix.shape}, expected (n, {dim})")
    if dtype != "float32":
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.all():
            row = first_row + int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{name}: feature row {row} exceeds {dtype}'s range; store it as float32"
            )
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim)


def _as_float32(feature: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A feature column's values as an (n, dim) float32 matrix (stored float16 is upcast)."""
    values = feature.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return values.astype(np.float32, copy=False)


def feature_file_writer(path: str | os.PathLike[str], schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer for a feature file. Dictionary encoding stays on the id columns only:
    feature values rarely repeat, and trying a dictionary on them made writing two to three
    times slower (4,096-d rows) for a file no smaller."""
    ids = [name for name in schema.names if name != FEATURE_COLUMN]
    return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=ids)


class FeatureWriter:
    """Stream ``(ids, matrix)`` chunks into a feature Parquet file, atomically.

    Use as a context manager; the file appears under its final name only on a clean exit.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        id_columns: Mapping[str, pa.DataType],
        dim: int,
        metadata: Mapping[str, str] | None = None,
        dtype: FeatureDtype = "float32",
    ) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.dtype = dtype
        schema = feature_schema(id_columns, self.dim, dtype)
        if metadata:
            schema = schema.with_metadata({k: str(v) for k, v in metadata.items()})
        self.schema = schema
        self.rows = 0
        self._atomic = atomic_path(self.path)
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> FeatureWriter:
        tmp = self._atomic.__enter__()
        self._writer = feature_file_writer(tmp, self.schema)
        return self

    def write(self, ids: Mapping[str, Sequence | np.ndarray], matrix: np.ndarray) -> None:
        assert self._writer is not None, "FeatureWriter used outside its context"
        if not np.isfinite(matrix).all():
            bad = int((~np.isfinite(matrix)).any(axis=1).sum())
            raise ValueError(f"{self.path.name}: {bad} feature rows contain NaN or Inf")
        columns = []
        for field in self.schema:
            if field.name == FEATURE_COLUMN:
                columns.append(
                    stored_matrix(matrix, self.dim, self.dtype, self.path.name, self.rows)
                )
            else:
                columns.append(pa.array(ids[field.name], type=field.type))
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = None
        if self._writer is not None:
            try:
                self._writer.close()  # writes the footer: can meet a full disk too
            except BaseException as error:  # noqa: BLE001 - handed to the atomic exit below
                failure = error
        if exc is None and failure is not None:
            exc_type, exc, tb = type(failure), failure, failure.__traceback__
        self._atomic.__exit__(exc_type, exc, tb)
        if failure is not None and exc is failure:
            raise failure


def read_features(
    path: str | os.PathLike[str], columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a feature file: (id columns as a DataFrame, float32 matrix of shape (n, D))."""
    table = read_arrow(path, None if columns is None else [*columns, FEATURE_COLUMN])
    feature = table.column(FEATURE_COLUMN).combine_chunks()
    matrix = _as_float32(feature, feature.type.list_size)
    ids = table.drop([FEATURE_COLUMN]).to_pandas()
    return ids, matrix


def head_features(path: str | os.PathLike[str], rows: int = 5) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``rows`` rows of a feature file, read without loading the rest."""
    parquet = parquet_file(path)
    dim = parquet.schema_arrow.field(FEATURE_COLUMN).type.list_size
    batch = next(iter_batches(path, max(1, rows), parquet=parquet), None)
    if batch is None:
        ids = pd.DataFrame(columns=[n for n in parquet.schema_arrow.names if n != FEATURE_COLUMN])
        return ids, np.zeros((0, dim), dtype=np.float32)
    table = pa.Table.from_batches([batch])
    matrix = _as_float32(table.column(FEATURE_COLUMN).combine_chunks(), dim)
    return table.drop([FEATURE_COLUMN]).to_pandas(), matrix


def write_table(path: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet atomically."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def iter_feature_batches(
    path: str | os.PathLike[str], batch_rows: int = 8192
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """A feature file as ``(id columns, float32 matrix)`` batches of at most ``batch_rows``, in
    file order, so that memory is bounded by the batch and not by the file."""
    parquet = parquet_file(path)
    dim = parquet.schema_arrow.field(FEATURE_COLUMN).type.list_size
    for batch in iter_batches(path, batch_rows, parquet=parquet):
        matrix = _as_float32(batch.column(FEATURE_COLUMN), dim)
        ids = batch.drop_columns([FEATURE_COLUMN]).to_pandas()
        yield ids, matrix
