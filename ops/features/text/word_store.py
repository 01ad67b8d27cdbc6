"""Word vectors restricted to a dataset's vocabulary, stored as a feature Parquet file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ops.features.text.word_vectors import WordVectors
from ops.storage.parquet_io import FeatureWriter, read_features, read_schema


def save_word_vectors(wv: WordVectors, path: Path) -> int:
    with FeatureWriter(
        path, {"word": pa.string()}, wv.dim, metadata={"name": wv.name, "source": wv.source}
    ) as writer:
        writer.write({"word": wv.words}, np.asarray(wv.matrix))
    return len(wv)


def load_word_vectors_file(path: Path) -> WordVectors:
    ids, matrix = read_features(path)
    meta = read_schema(path).metadata or {}
    words = ids["word"].tolist()
    return WordVectors(
        vocab={w: i for i, w in enumerate(words)},
        matrix=matrix,
        name=meta.get(b"name", b"words").decode(),
        source=meta.get(b"source", b"file").decode(),
    )
