"""The exact index written block by block is byte for byte the file faiss writes for the same
vectors, and searches the same; a wrong count or width is refused."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ops.search.flat_file import FlatIndexFile
from ops.search.vectors import read_index


@pytest.mark.parametrize("rows", [0, 1, 23])
def test_blocks_written_are_the_file_faiss_writes(tmp_path, rows: int) -> None:
    vectors = np.random.default_rng(rows).standard_normal((rows, 6)).astype(np.float32)
    in_memory = faiss.IndexFlatIP(6)
    in_memory.add(vectors)
    faiss.write_index(in_memory, str(tmp_path / "faiss.faiss"))
    with FlatIndexFile(tmp_path / "streamed.faiss", 6, rows) as index:
        for start in range(0, rows, 5):
            index.add(vectors[start : start + 5].astype(np.float64))
    streamed = (tmp_path / "streamed.faiss").read_bytes()
    assert streamed == (tmp_path / "faiss.faiss").read_bytes()
    read = read_index(tmp_path / "streamed.faiss")
    assert isinstance(read, faiss.IndexFlatIP) and read.ntotal == rows
    if rows:
        scores, ids = read.search(vectors[:3], min(rows, 4))
        expected_scores, expected_ids = in_memory.search(vectors[:3], min(rows, 4))
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(scores, expected_scores)


def test_a_wrong_count_or_width_is_refused(tmp_path) -> None:
    index = FlatIndexFile(tmp_path / "short.faiss", 4, 3)
    index.add(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="2 vectors written, 3 announced"):
        index.close()
    with FlatIndexFile(tmp_path / "wide.faiss", 4, 3) as index:
        with pytest.raises(ValueError, match="expected \\(n, 4\\)"):
            index.add(np.zeros((1, 5), dtype=np.float32))
        with pytest.raises(ValueError, match="more than the 3"):
            index.add(np.zeros((4, 4), dtype=np.float32))
        index.add(np.zeros((3, 4), dtype=np.float32))
