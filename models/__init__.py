"""Pure-PyTorch models of the two-branch networks: branches, networks, losses, samplers.

Names load on first use, so that :mod:`models.branch_arrays` (numpy only) is importable
without torch."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Batch": "models.samplers",
    "Branch": "models.branch",
    "EmbeddingLossConfig": "models.losses",
    "EmbeddingNet": "models.embedding_net",
    "NeighborhoodSampler": "models.samplers",
    "PairBatch": "models.samplers",
    "PairSampler": "models.samplers",
    "SimilarityNet": "models.similarity_net",
    "TripletSampler": "models.samplers",
    "embedding_loss": "models.losses",
    "logistic_loss": "models.losses",
    "pairwise_distance": "models.losses",
    "region_phrase_embedding_loss": "models.losses",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
