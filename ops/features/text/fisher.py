"""Fisher vectors of sentences over word vectors.

The paper encodes a sentence with a Fisher vector over a Hybrid Gaussian-Laplacian Mixture
Model (HGLMM) fitted on ICA-transformed word2vec vectors. We implement the standard
diagonal-covariance *Gaussian* mixture Fisher vector (the "improved" Fisher vector of
Perronnin et al. 2010) as the documented substitute: gradients with respect to the means and
the variances, scaled by the inverse square roots of the mixture weights, then signed square
root and L2 normalization. The optional word-vector transform (PCA whitening or FastICA)
stands in for the paper's ICA step.

For a sentence of N in-vocabulary words x_t, posteriors g_t(k), weights w_k, means m_k and
standard deviations s_k, component k contributes (all operations per dimension)::

    G_mean_k = 1 / (N sqrt(w_k))   * sum_t g_t(k) (x_t - m_k) / s_k
    G_var_k  = 1 / (N sqrt(2 w_k)) * sum_t g_t(k) [((x_t - m_k) / s_k)^2 - 1]

and the vector is ``[G_mean_1 .. G_mean_K, G_var_1 .. G_var_K]`` of length 2 K d.
Everything learned (transform, mixture, PCA) is fitted on the training split only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA

from ops.features.text.word_vectors import WordVectors

# Texts whose float64 Fisher vectors are computed at once by ``transform``.
TRANSFORM_BLOCK_ROWS = 1024

WordTransform = Literal["pca", "ica"]
TokenLists = Sequence[Sequence[str]] | Sequence[np.ndarray] | Sequence[Sequence[int]]


def as_index_lists(token_lists_or_indices: TokenLists, wv: WordVectors) -> list[np.ndarray]:
    """Token lists (strings, looked up in ``wv``) or row-index lists -> int64 index arrays."""
    result: list[np.ndarray] = []
    for item in token_lists_or_indices:
        if isinstance(item, np.ndarray) and item.dtype.kind in "iu":
            result.append(item.astype(np.int64, copy=False))
        elif len(item) and isinstance(item[0], str):
            result.append(wv.lookup(item)[0])
        else:
            result.append(np.asarray(item, dtype=np.int64).reshape(-1))
    return result


def sentence_matrix(index_lists: Sequence[np.ndarray]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse (sentences x unique words) count matrix, and the unique word rows it refers to."""
    lengths = np.fromiter((len(x) for x in index_lists), dtype=np.int64, count=len(index_lists))
    flat = np.concatenate(index_lists) if len(index_lists) else np.zeros(0, dtype=np.int64)
    unique, columns = np.unique(flat, return_inverse=True)
    sentence_of = np.repeat(np.arange(len(index_lists)), lengths)
    counts = sp.csr_matrix(
        (np.ones(len(flat), dtype=np.float64), (sentence_of, columns)),
        shape=(len(index_lists), len(unique)),
    )
    counts.sum_duplicates()
    return counts, unique


def power_l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Signed square root, then L2 normalization of each row (zero rows stay zero)."""
    # One new array, not the three temporaries of sign(x) * sqrt(|x|); adding 0.0 turns the
    # -0.0 that copysign keeps into the 0.0 that sign(x) * sqrt(|x|) gives.
    out = np.sqrt(np.abs(matrix))
    np.copysign(out, matrix, out=out)
    out += 0.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def hash_arrays(digest: hashlib._Hash, *arrays: np.ndarray | None) -> None:
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())


class FisherVectorEncoder:
    """Gaussian-mixture Fisher vector of a sentence's word vectors (see module docstring)."""

    def __init__(
        self,
        n_components: int = 30,
        pca_words: int | None = None,
        seed: int = 0,
        max_fit_words: int = 200_000,
        *,
        word_transform: WordTransform = "pca",
        max_iter: int = 100,
    ) -> None:
        if word_transform not in ("pca", "ica"):
            raise ValueError(f"word_transform must be 'pca' or 'ica', got {word_transform!r}")
        self.n_components = int(n_components)
        self.pca_words = pca_words
        self.word_transform = word_transform
        self.seed = seed
        self.max_fit_words = int(max_fit_words)
        self.max_iter = max_iter
        self.transform_: PCA | FastICA | None = None
        self.weights_: np.ndarray | None = None
        self.means_: np.ndarray | None = None
        self.variances_: np.ndarray | None = None
        self.fit_words_: int = 0
        self.converged_: bool = False
        self._wv: WordVectors | None = None
        self._word_features: np.ndarray | None = None
        self._word_posteriors: np.ndarray | None = None

    @property
    def word_dim(self) -> int:
        if self.means_ is None:
            raise RuntimeError("FisherVectorEncoder is not fitted")
        return int(self.means_.shape[1])

    @property
    def dim(self) -> int:
        return 2 * self.n_components * self.word_dim

    @property
    def label(self) -> str:
        """Short name for file names, e.g. ``fisher30`` or ``fisher30_ica300``."""
        label = f"fisher{self.n_components}"
        if self.pca_words:
            label += f"_{self.word_transform}{self.pca_words}"
        return label

    def word_features(self, vectors: np.ndarray) -> np.ndarray:
        """Word vectors after the fitted PCA/ICA transform (float64)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        return vectors if self.transform_ is None else self.transform_.transform(vectors)

    def fit(self, token_index_lists: TokenLists, wv: WordVectors) -> FisherVectorEncoder:
        """Fit the word transform and the mixture on the words of the given (training) texts.

        The mixture is fitted on every occurrence, exactly and cheaply: occurrences of one
        word share a vector, so EM runs over distinct words weighted by their counts. The
        word transform is fitted on at most ``max_fit_words`` occurrences (a seeded random
        subset). Words are taken in first-occurrence order, so the fit depends only on these
        texts and their words' vectors, never on row numbers in ``wv``.
        """
        index_lists = as_index_lists(token_index_lists, wv)
        occurrences = np.concatenate(index_lists) if index_lists else np.zeros(0, np.int64)
        rows, first_seen, counts = np.unique(occurrences, return_index=True, return_counts=True)
        order = np.argsort(first_seen)
        rows, counts = rows[order], counts[order]
        if len(rows) < max(self.n_components, 2):
            raise ValueError(
                f"Fisher vector fit needs at least {self.n_components} distinct "
                f"in-vocabulary words, got {len(rows)}"
            )

        self.transform_ = None
        if self.pca_words:
            sample = occurrences
            if len(sample) > self.max_fit_words:
                rng = np.random.default_rng(self.seed)
                sample = sample[np.sort(rng.choice(len(sample), self.max_fit_words, False))]
            if self.word_transform == "pca":
                self.transform_ = PCA(self.pca_words, whiten=True, random_state=self.seed)
            else:
                self.transform_ = FastICA(
                    self.pca_words, whiten="unit-variance", random_state=self.seed, max_iter=400
                )
            self.transform_.fit(wv.matrix[sample].astype(np.float64))

        mixture = fit_diagonal_gmm(
            self.word_features(wv.matrix[rows]),
            counts.astype(np.float64),
            self.n_components,
            seed=self.seed,
            max_iter=self.max_iter,
        )
        self.weights_ = mixture.weights
        self.means_ = mixture.means
        self.variances_ = mixture.variances
        self.converged_ = mixture.converged
        self.fit_words_ = len(occurrences)
        self.attach(wv)
        return self

    def attach(self, wv: WordVectors) -> None:
        """Precompute transformed vectors and posteriors of every word of ``wv``.

        Words are discrete, so a word's posterior is computed once, not per occurrence.
        Attaching other vectors (e.g. a larger vocabulary) changes nothing fitted.
        """
        assert self.weights_ is not None and self.means_ is not None
        assert self.variances_ is not None
        self._wv = wv
        self._word_features = self.word_features(wv.matrix)
        self._word_posteriors = np.exp(
            log_posteriors(self._word_features, self.weights_, self.means_, self.variances_)
        )

    def raw_fisher_vectors(self, token_lists_or_indices: TokenLists) -> np.ndarray:
        """Fisher vectors before power and L2 normalization, shape (n, 2 K d), float64."""
        if self._wv is None or self._word_posteriors is None or self._word_features is None:
            raise RuntimeError("FisherVectorEncoder is not fitted")
        assert self.weights_ is not None and self.means_ is not None
        assert self.variances_ is not None
        index_lists = as_index_lists(token_lists_or_indices, self._wv)
        counts, unique = sentence_matrix(index_lists)
        n, k_count, d = len(index_lists), self.n_components, self.word_dim
        n_words = np.asarray(counts.sum(axis=1)).reshape(-1)
        scale = np.divide(1.0, n_words, out=np.zeros(n), where=n_words > 0)[:, None]

        posteriors = self._word_posteriors[unique]  # (U, K)
        features = self._word_features[unique]  # (U, d)
        zeroth = counts @ posteriors  # (n, K): sum_t g_t(k)
        std = np.sqrt(self.variances_)
        out = np.empty((n, 2, k_count, d), dtype=np.float64)
        for k in range(k_count):
            weighted = posteriors[:, k : k + 1] * features
            first = counts @ weighted  # sum_t g_t(k) x_t
            second = counts @ (weighted * features)  # sum_t g_t(k) x_t^2
            mean, s0 = self.means_[k], zeroth[:, k : k + 1]
            centered = first - mean * s0
            squared = second - 2.0 * mean * first + mean**2 * s0
            out[:, 0, k] = centered / std[k] * scale / np.sqrt(self.weights_[k])
            out[:, 1, k] = (
                (squared / self.variances_[k] - s0) * scale / np.sqrt(2.0 * self.weights_[k])
            )
        return out.reshape(n, self.dim)

    def transform(self, token_lists_or_indices: TokenLists) -> np.ndarray:
        """Power- and L2-normalized Fisher vectors, float32 (n, 2 K d); empty text -> zeros.

        Encoded :data:`TRANSFORM_BLOCK_ROWS` texts at a time: the float64 vectors of a block
        and their normalization are the only temporaries (at the paper's 18,000 dims, 147 MB
        a block rather than about 2 GB for a 4,096-text chunk at once). Each row's value does
        not depend on the rows encoded with it."""
        if self._wv is None:
            raise RuntimeError("FisherVectorEncoder is not fitted")
        index_lists = as_index_lists(token_lists_or_indices, self._wv)
        out = np.empty((len(index_lists), self.dim), dtype=np.float32)
        for start in range(0, len(index_lists), TRANSFORM_BLOCK_ROWS):
            block = index_lists[start : start + TRANSFORM_BLOCK_ROWS]
            out[start : start + len(block)] = power_l2_normalize(self.raw_fisher_vectors(block))
        return out

    def fingerprint(self) -> str:
        """sha256 over everything fitted (word transform, mixture parameters)."""
        if self.weights_ is None:
            raise RuntimeError("FisherVectorEncoder is not fitted")
        digest = hashlib.sha256(self.label.encode())
        reducer = self.transform_
        if reducer is not None:
            hash_arrays(digest, reducer.mean_, reducer.components_)
        hash_arrays(digest, self.weights_, self.means_, self.variances_)
        return digest.hexdigest()


@dataclass
class DiagonalMixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    variances: np.ndarray  # (K, d)
    n_iter: int
    converged: bool


def log_posteriors(
    points: np.ndarray, weights: np.ndarray, means: np.ndarray, variances: np.ndarray
) -> np.ndarray:
    """log p(k | x) of each point under a diagonal Gaussian mixture, shape (n, K)."""
    log_joint = _log_joint(points, weights, means, variances)
    return log_joint - logsumexp(log_joint, axis=1, keepdims=True)


def _log_joint(
    points: np.ndarray, weights: np.ndarray, means: np.ndarray, variances: np.ndarray
) -> np.ndarray:
    precisions = 1.0 / variances
    squared = (
        (points**2) @ precisions.T
        - 2.0 * points @ (means * precisions).T
        + np.sum(means**2 * precisions, axis=1)
    )
    log_norm = -0.5 * (points.shape[1] * np.log(2 * np.pi) + np.sum(np.log(variances), axis=1))
    return np.log(weights) + log_norm - 0.5 * squared


def _m_step(
    points: np.ndarray, counts: np.ndarray, resp: np.ndarray, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    weighted = resp * counts[:, None]
    totals = weighted.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = weighted.T @ points / totals[:, None]
    variances = weighted.T @ (points**2) / totals[:, None] - means**2 + reg_covar
    return totals / counts.sum(), means, variances


def fit_diagonal_gmm(
    points: np.ndarray,
    counts: np.ndarray,
    n_components: int,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> DiagonalMixture:
    """EM for a diagonal-covariance Gaussian mixture over points repeated ``counts`` times.

    Identical to fitting sklearn's ``GaussianMixture(covariance_type="diag")`` on the
    expanded data (same updates, same stopping rule on the mean log-likelihood), at the
    cost of the distinct points only. Initialized by count-weighted k-means unless ``init``
    gives (weights, means, variances).
    """
    points = np.asarray(points, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if init is None:
        labels = (
            KMeans(n_components, n_init=1, random_state=seed)
            .fit(points, sample_weight=counts)
            .labels_
        )
        resp = np.zeros((len(points), n_components))
        resp[np.arange(len(points)), labels] = 1.0
        weights, means, variances = _m_step(points, counts, resp, reg_covar)
    else:
        weights, means, variances = (np.asarray(a, dtype=np.float64) for a in init)
    total = counts.sum()
    bound = -np.inf
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        log_joint = _log_joint(points, weights, means, variances)
        log_norm = logsumexp(log_joint, axis=1, keepdims=True)
        resp = np.exp(log_joint - log_norm)
        weights, means, variances = _m_step(points, counts, resp, reg_covar)
        previous, bound = bound, float(counts @ log_norm[:, 0] / total)
        if abs(bound - previous) < tol:
            converged = True
            break
    return DiagonalMixture(weights, means, variances, n_iter, converged)
