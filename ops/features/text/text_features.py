"""Per-text feature files: mean word vectors or Fisher vectors (+ PCA), streamed to Parquet.

Everything learned (Fisher mixture, word transform, PCA) is fitted by
:func:`fit_text_encoders` on training-split texts only; :func:`build_text_features` then
encodes every text of every split chunk by chunk with those frozen encoders.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.decomposition import PCA, IncrementalPCA

from ops.data.tokenize import tokenize
from ops.features.text.fisher import FisherVectorEncoder, sentence_matrix
from ops.features.text.pca import fit_pca, pca_fingerprint
from ops.features.text.settings import TextFeatureSettings, TextMethod
from ops.features.text.word_vectors import WordVectors
from ops.storage.parquet_io import FeatureWriter

Progress = Callable[[int, int], None]

# Above this many bytes of training features, PCA is fitted from a stream of chunks.
PCA_IN_MEMORY_BYTES = 1 << 30


@dataclass
class TextFeatureStats:
    rows: int
    dim: int
    oov_rate: dict[str, float]  # per split: out-of-vocabulary tokens / tokens
    tokens: dict[str, int]  # per split
    empty_after_tokenize: int  # texts with no token at all
    no_known_words: int  # texts with tokens, none in the vocabulary
    seconds: float


@dataclass
class TextEncoders:
    """Word vectors plus everything fitted on the training split for one text variant."""

    method: TextMethod
    wv: WordVectors
    fisher: FisherVectorEncoder | None = None
    pca: PCA | IncrementalPCA | None = None
    train_rows: int = 0

    @property
    def variant(self) -> str:
        """File-name variant, e.g. ``mean_glove50`` or ``fisher30_pca1000_glove50``."""
        parts = ["mean" if self.method == "mean" else self.fisher.label]  # type: ignore[union-attr]
        if self.pca is not None:
            parts.append(f"pca{self.pca.n_components_}")
        parts.append(self.wv.name)
        return "_".join(parts)

    @property
    def dim(self) -> int:
        if self.pca is not None:
            return int(self.pca.n_components_)
        return self.fisher.dim if self.fisher is not None else self.wv.dim

    def fingerprint(self) -> str:
        """sha256 over everything fitted on training texts.

        Pretrained vectors are not fitted (restricting them to the dataset's words is a
        lookup filter), so they are left out; vectors trained on the corpus are included.
        """
        digest = hashlib.sha256(f"{self.method}|{self.variant}".encode())
        if self.wv.source == "word2vec_train":
            digest.update(self.wv.fingerprint().encode())
        if self.fisher is not None:
            digest.update(self.fisher.fingerprint().encode())
        if self.pca is not None:
            digest.update(pca_fingerprint(self.pca).encode())
        return digest.hexdigest()

    def encode(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        return encode_tokens(token_lists, self.wv, self.method, self.fisher, self.pca)


def dataset_vocabulary(texts: Iterable[str]) -> set[str]:
    """Every token of ``texts`` plus the parts of hyphenated tokens (for ``vocab_filter``)."""
    vocabulary: set[str] = set()
    for text in texts:
        for token in tokenize(_as_text(text)):
            vocabulary.add(token)
            if "-" in token:
                vocabulary.update(p for p in token.split("-") if p)
    return vocabulary


def mean_word_vectors(index_lists: Sequence[np.ndarray], wv: WordVectors) -> np.ndarray:
    """L2-normalized mean of each text's word vectors; zeros for a text with no known word."""
    counts, unique = sentence_matrix(index_lists)
    sums = counts @ wv.matrix[unique].astype(np.float64)
    n_words = np.asarray(counts.sum(axis=1))
    means = np.divide(sums, n_words, out=np.zeros_like(sums), where=n_words > 0)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    np.divide(means, norms, out=means, where=norms > 0)
    return means.astype(np.float32)


def encode_tokens(
    token_lists: Sequence[Sequence[str]],
    wv: WordVectors,
    method: TextMethod,
    fisher: FisherVectorEncoder | None = None,
    pca: PCA | IncrementalPCA | None = None,
) -> np.ndarray:
    """Feature rows for tokenized texts; a text with no known word stays a zero row."""
    index_lists = [wv.lookup(tokens)[0] for tokens in token_lists]
    return _encode_indices(index_lists, wv, method, fisher, pca)


def _encode_indices(
    index_lists: Sequence[np.ndarray],
    wv: WordVectors,
    method: TextMethod,
    fisher: FisherVectorEncoder | None,
    pca: PCA | IncrementalPCA | None,
) -> np.ndarray:
    if method == "mean":
        features = mean_word_vectors(index_lists, wv)
    elif method == "fisher":
        if fisher is None:
            raise ValueError("method 'fisher' needs a fitted FisherVectorEncoder")
        if fisher._wv is not wv:
            fisher.attach(wv)
        features = fisher.transform(index_lists)
    else:
        raise ValueError(f"unknown text feature method {method!r}; expected 'mean' or 'fisher'")
    if pca is None:
        return features
    reduced = pca.transform(features).astype(np.float32)
    # PCA centers the data; keep "nothing to encode" visible as an exact zero row.
    empty = np.fromiter((len(x) == 0 for x in index_lists), dtype=bool, count=len(index_lists))
    reduced[empty] = 0.0
    return reduced


def fit_text_encoders(
    train_texts: Sequence[str], wv: WordVectors, settings: TextFeatureSettings
) -> TextEncoders:
    """Fit the Fisher mixture and/or PCA on TRAINING texts only.

    ``word_dim`` reduces word vectors (PCA whitening or FastICA) before the mixture.
    """
    index_lists = [wv.lookup(tokenize(_as_text(t)))[0] for t in train_texts]
    fisher = None
    if settings.method == "fisher":
        fisher = FisherVectorEncoder(
            settings.fisher_components,
            pca_words=settings.word_dim,
            seed=settings.seed,
            max_fit_words=settings.max_fit_words,
            word_transform=settings.word_transform,
        ).fit(index_lists, wv)
    encoders = TextEncoders(settings.method, wv, fisher, None, train_rows=len(index_lists))
    if settings.pca_dim is not None:
        encoders.pca = _fit_feature_pca(encoders, index_lists, settings)
    return encoders


def _fit_feature_pca(
    encoders: TextEncoders,
    index_lists: list[np.ndarray],
    settings: TextFeatureSettings,
) -> PCA | IncrementalPCA:
    pca_dim, seed, chunk_rows = settings.pca_dim, settings.seed, settings.chunk_rows
    assert pca_dim is not None
    # Texts with no known word are zero rows that carry no information about the data's
    # principal directions; leave them out of the fit.
    known = [x for x in index_lists if len(x)]
    if settings.pca_fit_texts is not None and settings.pca_fit_texts < len(known):
        # The covariance's cost is linear in the rows fitted (566,000 COCO training captions
        # at 18,000 dims: about 90 minutes on two cores), so a large split may fit a sample.
        chosen = np.random.default_rng(seed).choice(len(known), settings.pca_fit_texts, False)
        known = [known[i] for i in np.sort(chosen)]
    input_dim = encoders.dim
    if pca_dim > min(len(known), input_dim):
        raise ValueError(
            f"PCA to {pca_dim} dims needs at least that many training texts with known words "
            f"({len(known)}) and input dims ({input_dim})"
        )

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(known), chunk_rows):
            yield _encode_indices(
                known[start : start + chunk_rows],
                encoders.wv,
                encoders.method,
                encoders.fisher,
                None,
            )

    if len(known) * input_dim * 4 <= PCA_IN_MEMORY_BYTES:
        return fit_pca(np.concatenate(list(chunks())), pca_dim, seed)
    return fit_pca(chunks(), pca_dim, seed, batch_rows=chunk_rows)


def build_text_features(
    texts: pd.DataFrame,
    id_columns: list[str],
    out_path: Path,
    encoders: TextEncoders,
    *,
    chunk_rows: int,
    progress: Progress | None = None,
) -> TextFeatureStats:
    """Encode every row of ``texts`` (id columns, ``text``, ``split``) into ``out_path``.

    Writes one row per text: the id columns and ``split`` as strings, and ``feature``.
    The file appears atomically, chunk by chunk, so memory is bounded by ``chunk_rows``.
    """
    started = time.perf_counter()
    missing = [c for c in [*id_columns, "text", "split"] if c not in texts.columns]
    if missing:
        raise ValueError(f"texts lack columns {missing}")
    wv, method, fisher, pca = encoders.wv, encoders.method, encoders.fisher, encoders.pca
    dim = encoders.dim
    schema = {c: pa.string() for c in id_columns if c != "split"}
    schema["split"] = pa.string()
    metadata = {"method": method, "word_vectors": wv.name, "dim": str(dim)}

    tokens: dict[str, int] = {}
    oov: dict[str, int] = {}
    empty = no_known = 0
    total = len(texts)
    with FeatureWriter(out_path, schema, dim, metadata=metadata) as writer:
        for start in range(0, total, chunk_rows):
            chunk = texts.iloc[start : start + chunk_rows]
            splits = chunk["split"].astype(str).to_numpy()
            index_lists: list[np.ndarray] = []
            for text, split in zip(chunk["text"].to_numpy(), splits, strict=True):
                words = tokenize(_as_text(text))
                indices, n_oov = wv.lookup(words)
                index_lists.append(indices)
                tokens[split] = tokens.get(split, 0) + len(words)
                oov[split] = oov.get(split, 0) + n_oov
                if not words:
                    empty += 1
                elif not len(indices):
                    no_known += 1
            matrix = _encode_indices(index_lists, wv, method, fisher, pca)
            ids = {c: chunk[c].astype(str).to_numpy() for c in schema if c != "split"}
            ids["split"] = splits
            writer.write(ids, matrix)
            if progress is not None:
                progress(min(start + chunk_rows, total), total)
    return TextFeatureStats(
        rows=total,
        dim=dim,
        oov_rate={s: (oov[s] / tokens[s] if tokens[s] else 0.0) for s in tokens},
        tokens=tokens,
        empty_after_tokenize=empty,
        no_known_words=no_known,
        seconds=time.perf_counter() - started,
    )


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value)
