"""The published retrieval index's names, read by builders and searchers alike (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.storage.paths import index_dir

TASK, NETWORK = "image_sentence", "embedding"
MANIFEST = "manifest.json"
TEXT_ENCODER = "text_encoder.npz"
# The champion's text branch as arrays (models.branch_arrays), so text queries need no torch.
TEXT_BRANCH = "text_branch.npz"
INDEX_FORMAT = 2


def no_model_message(dataset: str) -> str:
    return (
        f"no trained image–sentence embedding model for dataset {dataset!r}: run the "
        "full_pipeline (or retrain) job for it first"
    )


def manifest_path(root: Path, dataset: str) -> Path:
    return index_dir(root, dataset) / MANIFEST


def read_manifest(root: Path, dataset: str) -> dict[str, Any] | None:
    path = manifest_path(root, dataset)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
