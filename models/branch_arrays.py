"""A trained :class:`models.branch.Branch` as plain arrays, and its forward pass in numpy.

A text query needs only the text branch in evaluation mode; evaluated here it answers without
loading torch. ``Branch.to_arrays`` exports the weights and :meth:`BranchArrays.forward`
computes what ``Branch.forward`` does in eval mode (dropout off, BatchNorm on its running
statistics); a test holds the two equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

# F.normalize's floor on the norm (its ``eps``): a zero row stays zero.
NORMALIZE_EPS = 1e-12


@dataclass(frozen=True)
class BranchArrays:
    """``Linear(fc1) → BatchNorm(bn, eval) → ReLU → Linear(fc2) → L2-normalize``, float32."""

    fc1_weight: np.ndarray  # (hidden, in)
    fc1_bias: np.ndarray
    bn_mean: np.ndarray
    bn_var: np.ndarray
    bn_weight: np.ndarray
    bn_bias: np.ndarray
    bn_eps: np.ndarray  # a 0-d array, so that every field saves as an array
    fc2_weight: np.ndarray  # (out, hidden)
    fc2_bias: np.ndarray
    normalize: np.ndarray  # 0-d bool

    @property
    def in_dim(self) -> int:
        return int(self.fc1_weight.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.fc2_weight.shape[0])

    def forward(self, features: np.ndarray) -> np.ndarray:
        """Rows of ``features`` (n, in_dim) embedded as the torch branch does in eval mode."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"the branch takes rows of {self.in_dim} features, got shape {features.shape}"
            )
        hidden = features @ self.fc1_weight.T + self.fc1_bias
        scale = self.bn_weight / np.sqrt(self.bn_var + self.bn_eps)
        hidden = (hidden - self.bn_mean) * scale + self.bn_bias
        np.maximum(hidden, 0.0, out=hidden)
        out = hidden @ self.fc2_weight.T + self.fc2_bias
        if bool(self.normalize):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, NORMALIZE_EPS)
        return out.astype(np.float32, copy=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the arrays to ``path`` (an .npz; the caller makes the write atomic)."""
        with open(path, "wb") as handle:
            np.savez(handle, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BranchArrays:
        """The arrays saved at ``path``; a ValueError naming it when it is not a branch."""
        try:
            with np.load(Path(path), allow_pickle=False) as stored:
                arrays = {f.name: stored[f.name] for f in fields(cls)}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: not a saved branch ({error})") from None
        floats = {
            name: value.astype(np.float32, copy=False)
            for name, value in arrays.items()
            if name != "normalize"
        }
        return cls(**floats, normalize=arrays["normalize"].astype(bool))
