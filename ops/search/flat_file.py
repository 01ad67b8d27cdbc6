"""An exact (``IndexFlatIP``) faiss index written to its file block by block.

Built in memory, a flat index holds every vector (and, as it grows, copies of them), so the
index build's memory grew with the dataset. The flat index's file is its header followed by
the vectors as one float32 array, so it is written here as the embeddings come, in exactly the
bytes ``faiss.write_index`` writes (``faiss.read_index`` reads it back as an ``IndexFlatIP``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# faiss's header of a flat inner-product index: fourcc, d (int32), ntotal (int64), two unused
# int64 fields (faiss writes 1 << 20), is_trained (bool), metric type (int32, 0 = inner
# product), then the code vector's length in floats (uint64) and the floats.
FOURCC = b"IxFI"
UNUSED = 1 << 20
METRIC_INNER_PRODUCT = 0
HEADER = struct.Struct("<4siqqq?iQ")


class FlatIndexFile:
    """Write ``n_items`` vectors of ``dim`` as an ``IndexFlatIP`` file at ``path``; the
    count is checked when the file is closed."""

    def __init__(self, path: str | Path, dim: int, n_items: int) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self.n_items = int(n_items)
        self.written = 0
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._handle.write(
            HEADER.pack(
                FOURCC,
                self.dim,
                self.n_items,
                UNUSED,
                UNUSED,
                True,
                METRIC_INNER_PRODUCT,
                self.n_items * self.dim,
            )
        )

    def add(self, vectors: np.ndarray) -> None:
        block = np.ascontiguousarray(vectors, dtype=np.float32)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(
                f"{self.path}: vectors of shape {block.shape}, expected (n, {self.dim})"
            )
        if self.written + len(block) > self.n_items:
            raise ValueError(f"{self.path}: more than the {self.n_items} vectors announced")
        self._handle.write(memoryview(block.astype("<f4", copy=False)).cast("B"))
        self.written += len(block)

    def close(self) -> None:
        self._handle.close()
        if self.written != self.n_items:
            raise ValueError(
                f"{self.path}: {self.written} vectors written, {self.n_items} announced"
            )

    def __enter__(self) -> FlatIndexFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._handle.close()
