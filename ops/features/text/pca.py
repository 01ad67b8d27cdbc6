"""PCA of text features, fitted on the training split only.

An array is fitted at once. A stream of chunks (features too large to hold: the paper's
18,000-d Fisher vectors of 145,000 Flickr30K or 566,000 COCO training captions are 10 and
41 GB) accumulates the d x d covariance chunk by chunk and takes its top eigenvectors: memory
is the covariance (2.6 GB at 18,000 dims), never the data, and cost is linear in the rows. An
incremental SVD (IncrementalPCA) would instead run one (k + batch) x d SVD per batch of at
least k rows: about two hours at the paper's size on two cores, against minutes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.linalg
from sklearn.decomposition import PCA, IncrementalPCA

from ops.features.text.fisher import hash_arrays

# Largest input dimension for which an in-memory fit goes through the covariance matrix.
COVARIANCE_EIGH_MAX_DIM = 8192
# Largest input dimension for which a streamed fit accumulates the covariance matrix
# (float64, d * d * 8 bytes: 3.2 GB at 20,000); wider inputs go through IncrementalPCA.
STREAMED_COVARIANCE_MAX_DIM = 20_000
# Rows a covariance row-block update touches at once (bounds the temporary outer product).
_BLOCK_ROWS = 1024


def fit_pca(
    features: np.ndarray | Iterable[np.ndarray],
    out_dim: int,
    seed: int = 0,
    batch_rows: int = 4096,
) -> PCA | IncrementalPCA:
    """PCA to ``out_dim`` of ``features``: an array, or an iterable of row chunks."""
    if isinstance(features, np.ndarray):
        if features.ndim != 2 or out_dim > min(features.shape):
            raise ValueError(f"cannot reduce features of shape {features.shape} to {out_dim}")
        rows, dims = features.shape
        # With many more rows than dimensions, the eigendecomposition of the d x d covariance
        # is far cheaper than any SVD of the data (30000 x 3000 -> 1000: seconds, not a minute).
        if rows >= dims and dims <= COVARIANCE_EIGH_MAX_DIM:
            solver = "covariance_eigh"
        elif out_dim < 0.8 * min(rows, dims):
            solver = "randomized"
        else:
            solver = "full"
        return PCA(out_dim, svd_solver=solver, random_state=seed).fit(features)
    chunks = iter(features)
    first = next(chunks, None)
    if first is None:
        raise ValueError("cannot fit PCA on no rows")
    first = np.asarray(first)
    rest = _chained(first, chunks)
    if first.shape[1] <= STREAMED_COVARIANCE_MAX_DIM:
        return _fit_covariance_pca(rest, out_dim)
    return _fit_incremental_pca(rest, out_dim, batch_rows)


def pca_fingerprint(pca: PCA | IncrementalPCA) -> str:
    digest = hashlib.sha256()
    hash_arrays(digest, pca.mean_, pca.components_, pca.explained_variance_)
    return digest.hexdigest()


def _chained(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _fit_covariance_pca(chunks: Iterator[np.ndarray], out_dim: int) -> PCA:
    """Exact PCA from the streamed covariance; the same fit as ``PCA(svd_solver="full")``
    up to floating-point error and the sign of each component."""
    shift: np.ndarray | None = None
    gram = product = offset_sum = None
    rows = 0
    dtype: type[np.floating] = np.float32
    for chunk in chunks:
        chunk = np.asarray(chunk)
        if shift is None:
            dtype = np.float64 if chunk.dtype == np.float64 else np.float32
            # Accumulating about the first chunk's mean, not zero, keeps the final
            # centering from cancelling two large numbers.
            shift = chunk.mean(axis=0, dtype=np.float64).astype(dtype)
            gram = np.zeros((chunk.shape[1], chunk.shape[1]))
            # One d x d product buffer for every chunk, and the centering done in the
            # chunk's dtype: no float64 copy of the chunk.
            product = np.empty_like(gram, dtype=dtype)
            offset_sum = np.zeros(chunk.shape[1])
        centered = np.subtract(chunk, shift, dtype=dtype)
        np.matmul(centered.T, centered, out=product)
        gram += product
        offset_sum += centered.sum(axis=0, dtype=np.float64)
        rows += len(centered)
    del product
    assert shift is not None and gram is not None and offset_sum is not None
    dims = gram.shape[0]
    if rows <= out_dim or dims < out_dim:
        raise ValueError(f"cannot fit PCA to {out_dim} dims on {rows} rows of {dims} dims")
    offset = offset_sum / rows
    # Unbiased covariance, updated in place by row blocks: a whole np.outer would be a second
    # d x d matrix.
    gram /= rows - 1
    for start in range(0, dims, _BLOCK_ROWS):
        block = slice(start, start + _BLOCK_ROWS)
        gram[block] -= np.outer(offset[block], offset) * (rows / (rows - 1))
    total_variance = float(np.trace(gram))
    # The transpose of the symmetric matrix is the same matrix in Fortran order, which LAPACK
    # overwrites in place; the C-ordered matrix would be copied first (2.6 GB at 18,000 dims).
    values, vectors = scipy.linalg.eigh(
        gram.T, subset_by_index=(dims - out_dim, dims - 1), overwrite_a=True, check_finite=False
    )
    del gram
    values = np.clip(values[::-1], 0.0, None)
    components = vectors[:, ::-1].T
    # sklearn's sign rule: the largest entry of each component is positive.
    signs = np.sign(components[np.arange(out_dim), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    pca = PCA(out_dim)
    pca.n_components_ = out_dim
    pca.n_features_in_ = dims
    pca.n_samples_ = rows
    pca.mean_ = (shift.astype(np.float64) + offset).astype(dtype)
    pca.components_ = np.ascontiguousarray(components, dtype=dtype)
    pca.explained_variance_ = values.astype(dtype)
    pca.explained_variance_ratio_ = (values / total_variance).astype(dtype)
    pca.singular_values_ = np.sqrt(values * (rows - 1)).astype(dtype)
    remaining = dims - out_dim
    noise = (total_variance - values.sum()) / remaining if remaining else 0.0
    pca.noise_variance_ = float(max(noise, 0.0))
    return pca


def _fit_incremental_pca(
    chunks: Iterator[np.ndarray], out_dim: int, batch_rows: int
) -> IncrementalPCA:
    pca = IncrementalPCA(out_dim)
    batch = max(batch_rows, out_dim)
    pending: list[np.ndarray] = []
    pending_rows = 0
    fitted_rows = 0
    for chunk in chunks:
        pending.append(np.asarray(chunk))
        pending_rows += len(chunk)
        # Keep at least out_dim rows back so that the final partial_fit is never too small.
        while pending_rows >= batch + out_dim:
            stacked = np.concatenate(pending)
            pca.partial_fit(stacked[:batch])
            fitted_rows += batch
            pending = [stacked[batch:]]
            pending_rows = len(pending[0])
    if pending_rows:
        if pending_rows < out_dim:
            raise ValueError(f"cannot fit PCA to {out_dim} dims on {pending_rows} rows")
        pca.partial_fit(np.concatenate(pending))
    elif not fitted_rows:
        raise ValueError("cannot fit PCA on no rows")
    return pca
