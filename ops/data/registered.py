"""Acquire a registered dataset: from its registry entry to raw files under its own name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ops.data.acquire import RawDataset, acquire_custom, acquire_precomp, acquire_synthetic
from ops.data.registry import DatasetEntry
from ops.data.settings import DatasetSettings


def acquire_dataset(
    entry: DatasetEntry,
    root: Path,
    settings: DatasetSettings,
    log: Callable[[str], None] = print,
) -> RawDataset:
    """Generate, download or point at the entry's files; every path under its own name
    (``settings`` sizes a synthetic dataset)."""
    if entry.source == "synthetic":
        return acquire_synthetic(root, settings, entry.name)
    if entry.source == "custom":
        return acquire_custom(Path(str(entry.path)), dataset=entry.name)
    if entry.source == "precomp":
        return acquire_precomp(Path(str(entry.path)), dataset=entry.name)
    if entry.source == "coco_official":
        from ops.data.coco_official import acquire_coco_official

        split = Path(entry.karpathy_split) if entry.karpathy_split else None
        return acquire_coco_official(Path(str(entry.path)), root, entry.name, split)
    from ops.data.remote import acquire_public

    raw = acquire_public(entry.source, root, entry.path, log=log, dataset=entry.name)
    if entry.split == "paper" and entry.split_lists:
        from ops.data.coco_paper_split import with_paper_split
        from ops.storage.paths import raw_dir

        raw = with_paper_split(
            raw, raw_dir(root, entry.name), entry.split_lists, entry.split_lists_sha256
        )
    return raw
