"""Reading word-vector files (word2vec binary, word2vec/GloVe text, gzipped or not) in one
streaming pass that keeps only the wanted words.

Pretrained files are large (GoogleNews word2vec: 3 million × 300 floats, 3.6 GB) while a
dataset's vocabulary is a few tens of thousands of words, so a row is parsed into numbers
only when its word is wanted; memory grows with the words kept, not with the file.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ops.data.tables import DatasetFormatError

Wanted = Callable[[str], bool]
READ_CHUNK = 1 << 20


def open_bytes(path: Path) -> BinaryIO:
    """``path`` opened for binary reading, transparently gunzipped."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def header_counts(line: bytes) -> tuple[int, int] | None:
    """``(count, dim)`` when ``line`` is a word2vec ``count dim`` header."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def read_text_vectors(path: Path, has_header: bool, wanted: Wanted) -> tuple[list[str], np.ndarray]:
    """Words (in file order) for which ``wanted(word)`` holds, and their vectors."""
    words: list[str] = []
    rows: list[np.ndarray] = []
    declared: tuple[int, int] | None = None
    dim: int | None = None
    data_lines = 0
    with open_bytes(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and has_header:
                declared = header_counts(raw)
                dim = declared[1] if declared else None
                continue
            line = raw.rstrip(b"\r\n").rstrip(b" ")
            if not line:
                continue
            word_bytes, _, rest = line.partition(b" ")
            if not rest:
                raise DatasetFormatError(
                    path, f"expected a word followed by numbers, got {line[:60]!r}", line_no
                )
            values = rest.count(b" ") + 1
            if dim is None:
                dim = values
            if values > dim:
                # A word with spaces inside (GloVe 840B has a few): the last ``dim`` are numbers.
                pieces = line.rsplit(b" ", dim)
                word_bytes, rest, values = pieces[0], b" ".join(pieces[1:]), dim
            if values != dim:
                raise DatasetFormatError(path, f"line has {values} values, expected {dim}", line_no)
            data_lines += 1
            try:
                word = word_bytes.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetFormatError(path, "line is not valid UTF-8", line_no) from err
            if not wanted(word):
                continue
            try:
                vector = np.array(rest.split(b" "), dtype=np.float32)
            except ValueError as err:
                bad = next(v for v in rest.split(b" ") if not _is_number(v))
                raise DatasetFormatError(
                    path, f"not a number: {bad.decode('utf-8', 'replace')!r:.40}", line_no
                ) from err
            words.append(word)
            rows.append(vector)
    if declared and data_lines != declared[0]:
        raise DatasetFormatError(
            path, f"header declares {declared[0]} vectors but the file has {data_lines}"
        )
    return words, _stack(rows, dim or 0)


def read_binary_vectors(path: Path, wanted: Wanted) -> tuple[list[str], np.ndarray]:
    """word2vec binary: a ``count dim`` line, then per word its bytes, a space and ``dim``
    little-endian float32 values (optionally followed by a newline)."""
    words: list[str] = []
    rows: list[np.ndarray] = []
    with open_bytes(path) as handle:
        header = handle.readline()
        counts = header_counts(header)
        if counts is None:
            raise DatasetFormatError(path, "binary word2vec file lacks its 'count dim' header", 1)
        count, dim = counts
        reader = _ChunkReader(handle)
        row_bytes = 4 * dim
        for index in range(count):
            word_bytes = reader.until_space()
            vector_bytes = reader.exactly(row_bytes)
            if word_bytes is None or vector_bytes is None:
                raise DatasetFormatError(
                    path, f"file ends after {index} of the {count} vectors its header declares"
                )
            word = word_bytes.lstrip(b"\n").decode("utf-8", errors="replace")
            if wanted(word):
                words.append(word)
                rows.append(np.frombuffer(vector_bytes, dtype="<f4").astype(np.float32))
    return words, _stack(rows, dim)


class _ChunkReader:
    """Reads a binary stream in large chunks, handing out words and fixed-size records."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.buffer = b""
        self.pos = 0

    def _fill(self) -> bool:
        chunk = self.handle.read(READ_CHUNK)
        if not chunk:
            return False
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def until_space(self) -> bytes | None:
        while True:
            end = self.buffer.find(b" ", self.pos)
            if end >= 0:
                word = self.buffer[self.pos : end]
                self.pos = end + 1
                return word
            if not self._fill():
                return None

    def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) - self.pos < size:
            if not self._fill():
                return None
        record = self.buffer[self.pos : self.pos + size]
        self.pos += size
        return record


def _is_number(value: bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
