"""A user's own dataset: one folder holding a Karpathy-style JSON and the images it names."""

from __future__ import annotations

from pathlib import Path

from ops.datasets.karpathy import load_karpathy
from ops.tables import DatasetFormatError, DatasetTables


def load_custom(folder: Path, dataset: str = "custom") -> DatasetTables:
    """Load ``folder/<one>.json``; image paths in it are relative to ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(folder, "custom dataset folder does not exist")
    candidates = sorted(path for path in folder.glob("*.json") if path.is_file())
    if len(candidates) != 1:
        found = ", ".join(path.name for path in candidates) or "none"
        raise DatasetFormatError(
            folder,
            f"expected exactly one Karpathy-style *.json directly in the folder, found {found}",
        )
    return load_karpathy(candidates[0], folder, dataset)
