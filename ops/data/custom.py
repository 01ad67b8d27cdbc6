"""A user's own dataset: one folder holding a Karpathy-style JSON and the images it names."""

from __future__ import annotations

from pathlib import Path

from ops.data.tables import DatasetFormatError


def custom_dataset_json(folder: Path) -> Path:
    """The one Karpathy-style ``*.json`` directly in ``folder``; anything else is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(folder, "custom dataset folder does not exist")
    candidates = sorted(path for path in folder.glob("*.json") if path.is_file())
    if len(candidates) != 1:
        found = ", ".join(path.name for path in candidates) or "none"
        raise DatasetFormatError(
            folder,
            f"a custom dataset is a folder with exactly one Karpathy-style *.json directly in "
            f"it and the images it names, relative to the folder; found {found}",
        )
    return candidates[0]
