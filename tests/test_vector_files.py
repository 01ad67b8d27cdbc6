"""Word-vector files are read in one streaming pass that keeps only the wanted words."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from ops.features.text.settings import WordVectorSettings
from ops.features.text.vector_files import read_binary_vectors, read_text_vectors
from ops.features.text.word_vectors import load_word_vectors


def _vectors(count: int, dim: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(1)
    return [f"w{k}" for k in range(count)], rng.standard_normal((count, dim)).astype(np.float32)


def _write_binary(path: Path, words: list[str], matrix: np.ndarray, newline: bool) -> None:
    with open(path, "wb") as handle:
        handle.write(f"{len(words)} {matrix.shape[1]}\n".encode())
        for word, row in zip(words, matrix, strict=True):
            handle.write(word.encode() + b" " + row.astype("<f4").tobytes())
            if newline:
                handle.write(b"\n")


@pytest.mark.parametrize("newline", [True, False])
def test_binary_reader_matches_gensim_with_and_without_newlines(tmp_path, newline) -> None:
    words, matrix = _vectors(3000, 7)
    path = tmp_path / "v.bin"
    _write_binary(path, words, matrix, newline)
    reference = KeyedVectors.load_word2vec_format(str(path), binary=True)
    wanted = {"w0", "w1234", "w2999"}
    got_words, got = read_binary_vectors(path, wanted.__contains__)
    assert got_words == ["w0", "w1234", "w2999"]
    np.testing.assert_array_equal(got, np.stack([reference[w] for w in got_words]))


def test_text_reader_keeps_gzipped_rows_and_words_with_spaces(tmp_path) -> None:
    path = tmp_path / "v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("the 0.5 -1 2\n. . . 1 2 3\ndog 0.25 0 -0.5\n")
    words, matrix = read_text_vectors(path, False, lambda w: w != "the")
    assert words == [". . .", "dog"]
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [0.25, 0, -0.5]])


def test_memory_follows_the_kept_words_not_the_file(tmp_path) -> None:
    words, matrix = _vectors(200_000, 50)  # 40 MB of floats
    path = tmp_path / "big.bin"
    _write_binary(path, words, matrix, newline=True)
    del matrix
    keep = {f"w{k}" for k in range(0, 200_000, 20_000)}
    tracemalloc.start()
    try:
        wv = load_word_vectors(WordVectorSettings(source="file", path=str(path)), vocab_filter=keep)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wv) == 10 and wv.dim == 50
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 40 MB file"
