"""Feature rows read on demand: a 2-D ``.npy`` file read row by row with ``pread``, and lazy row
subsets of it.

A split of COCO's text features is 14.8 GB and Flickr30K Entities' regions about 100 GB. A
memory map would keep every page a pass touched in the process (file-backed RSS, released only
under pressure); ``pread`` copies just the rows asked for into the caller's buffer, and the
file's pages stay in the kernel's page cache, shared and evictable. A :class:`RowSubset` is a
list of row numbers over such a file (or over an array in memory): slicing and indexing it
compose the row lists, and only :meth:`RowSubset.take` reads feature values. A subset may hand
its rows back in a wider dtype than the file stores (float16 on disk, float32 to compute): the
cast is per batch, so the file's savings hold in memory too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


class NpyRowFile:
    """The rows of a C-order 2-D ``.npy`` file, read with ``pread``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            self.offset = handle.tell()
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{self.path}: not a C-order 2-D numeric array (shape {shape})")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def take(self, rows: np.ndarray) -> np.ndarray:
        """``matrix[rows]`` as a new array; runs of consecutive rows are read in one call."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        result = np.empty((rows.size, self.shape[1]), dtype=self.dtype)
        if rows.size == 0:
            return result
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            bad = rows[(rows < 0) | (rows >= self.shape[0])][0]
            raise IndexError(f"{self.path}: row {bad} is out of range [0, {self.shape[0]})")
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [rows.size]])
        buffer = np.empty_like(result)
        descriptor = os.open(self.path, os.O_RDONLY)
        try:
            for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
                self._read_into(descriptor, int(ordered[start]), buffer[start:stop])
        finally:
            os.close(descriptor)
        result[order] = buffer
        return result

    def _read_into(self, descriptor: int, first_row: int, out: np.ndarray) -> None:
        view = memoryview(out).cast("B")
        position = self.offset + first_row * self.row_bytes
        done = 0
        while done < len(view):
            count = os.preadv(descriptor, [view[done:]], position + done)
            if count == 0:
                raise ValueError(f"{self.path}: file ends before row {first_row + len(out)}")
            done += count


class RowSubset:
    """Rows ``rows`` of ``source`` (an :class:`NpyRowFile` or an in-memory 2-D array), read
    only when :meth:`take` (or ``numpy.asarray``) asks, as ``dtype`` (the source's when None).
    ``finite_checked`` records that every row of the source is known to be finite, so checks
    need not read it again."""

    def __init__(
        self,
        source: NpyRowFile | np.ndarray,
        rows: np.ndarray | None = None,
        finite_checked: bool = False,
        dtype: np.dtype | type | str | None = None,
    ) -> None:
        if isinstance(source, np.ndarray) and source.ndim != 2:
            raise ValueError(f"a row subset needs a 2-D matrix, got shape {source.shape}")
        self.source = source
        # The dtype rows come back in (the source's own when None).
        self._dtype = np.dtype(source.dtype if dtype is None else dtype)
        total = int(source.shape[0])
        self.rows = (
            np.arange(total, dtype=np.int64)
            if rows is None
            else np.asarray(rows, dtype=np.int64).reshape(-1)
        )
        self.finite_checked = finite_checked

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows.size), int(self.source.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, index: Any) -> RowSubset | np.ndarray:
        """A slice, integer array or boolean mask gives a subset (nothing read); an integer
        gives that row's values."""
        if isinstance(index, (int, np.integer)):
            return self.take(np.array([index]))[0]
        if isinstance(index, tuple):
            raise TypeError("a row subset is indexed by rows only")
        return RowSubset(self.source, self.rows[index], self.finite_checked, self._dtype)

    def take(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The values of the subset's rows at ``positions`` (all of them when None)."""
        rows = self.rows if positions is None else self.rows[np.asarray(positions)]
        source = self.source
        values = source.take(rows) if isinstance(source, NpyRowFile) else source[rows]
        return values.astype(self._dtype, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.take()
        return values if dtype is None else values.astype(dtype, copy=False)
