"""The dataset registry: datasets registered by name, side by side in one data root.

A registered name is the dataset's identity everywhere: the folder under ``raw/``,
``tables/``, ``features/``, ``proposals/`` and ``graph/``, the ``dataset`` column of every
DuckDB table, and the Dagster partition key of every dataset-dependent asset. The registry
is one JSON file, ``datasets.json`` in the data root, written atomically. ``synthetic`` (the
embedded default dataset) is always registered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ops.storage.atomic import write_text_atomic
from ops.storage.paths import (
    DERIVED_FOLDERS,
    UnsafePathError,
    checkpoint_dir,
    derived_dir,
    features_dir,
    index_dir,
    raw_dir,
    report_dir,
    tables_dir,
)
from ops.storage.results_store import read_result

Source = Literal[
    "synthetic", "flickr30k", "coco", "coco_official", "flickr30k_entities", "custom", "precomp"
]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
CocoSplit = Literal["karpathy", "paper"]
DEFAULT_DATASET = "synthetic"
REGISTRY_FILE = "datasets.json"
# Sources that read a folder the user already has; the others download into raw/<name>/ and
# take ``path`` only for what cannot be downloaded (Flickr30K's images).
NEEDS_PATH = frozenset({"custom", "coco_official", "precomp"})
# A name is a folder name and a partition key: no separators, no spaces, nothing hidden. The
# one rule for every name read (add, the registry file, the command line), matched in full:
# ``$`` would also match before a final newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class DatasetRegistryError(ValueError):
    """A registry request that cannot be done; nothing was changed."""


class DatasetEntry(BaseModel):
    """One registered dataset: its source and where its files are. ``split`` (source
    ``coco``): ``karpathy`` or ``paper``, the authors' lists from ``split_lists`` (a folder,
    or a base URL with ``split_lists_sha256``, file name → SHA-256)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: Source
    path: str | None = None
    karpathy_split: str | None = None
    split: CocoSplit = "karpathy"
    split_lists: str | None = None
    split_lists_sha256: dict[str, str] | None = None


def registry_path(root: Path) -> Path:
    return Path(root) / REGISTRY_FILE


def _builtin() -> dict[str, DatasetEntry]:
    return {DEFAULT_DATASET: DatasetEntry(name=DEFAULT_DATASET, source="synthetic")}


def load_registry(root: Path) -> dict[str, DatasetEntry]:
    """Every registered dataset by name, ``synthetic`` included."""
    path = registry_path(root)
    entries = _builtin()
    if not path.exists():
        return entries
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        items = list(document["datasets"])
        for item in items:
            if not _NAME.fullmatch(str(item["name"])):
                raise DatasetRegistryError(
                    f"{path}: entry {item['name']!r} is not a valid dataset name ({NAME_RULE}); "
                    "nothing in the registry was used: fix or remove that entry"
                )
        listed = [DatasetEntry.model_validate(item) for item in items]
    except DatasetRegistryError:
        raise
    except (ValueError, KeyError, TypeError) as error:
        first = str(error).splitlines()[0]
        raise DatasetRegistryError(f"{path}: not a valid dataset registry ({first})") from None
    entries.update({entry.name: entry for entry in listed})
    return entries


def save_registry(root: Path, entries: dict[str, DatasetEntry]) -> None:
    listed = [e.model_dump() for name, e in sorted(entries.items()) if name != DEFAULT_DATASET]
    write_text_atomic(registry_path(root), json.dumps({"datasets": listed}, indent=2) + "\n")


NAME_RULE = (
    "use 1–64 letters, digits, '_', '-' or '.', starting with a letter or digit "
    "(it becomes a folder name and a partition key)"
)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DatasetRegistryError(f"dataset name {name!r} is not allowed: {NAME_RULE}")
    return name


def get_dataset(root: Path, name: str) -> DatasetEntry:
    entries = load_registry(root)
    if name not in entries:
        known = ", ".join(sorted(entries))
        raise DatasetRegistryError(
            f"dataset {name!r} is not registered in {registry_path(root)} (registered: "
            f"{known}); register it with: twobranch dataset add {name} --source SOURCE "
            "--path DIR"
        )
    return entries[name]


def _existing_folder(value: str | Path, what: str) -> str:
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise DatasetRegistryError(f"{what} {path} is not a folder")
    return str(path)


def add_dataset(
    root: Path,
    name: str,
    source: str,
    path: str | Path | None = None,
    karpathy_split: str | Path | None = None,
    split: str = "karpathy",
    split_lists: str | Path | None = None,
    split_lists_sha256: dict[str, str] | None = None,
) -> DatasetEntry:
    """Register ``name``; the registry is unchanged when anything about the request is wrong."""
    check_name(name)
    if source not in SOURCES:
        raise DatasetRegistryError(
            f"unknown source {source!r}; expected one of {', '.join(SOURCES)}"
        )
    entries = load_registry(root)
    if name in entries:
        raise DatasetRegistryError(
            f"dataset {name!r} is already registered (source {entries[name].source}); "
            f"remove it first with: twobranch dataset remove {name}"
        )
    if source in NEEDS_PATH and path is None:
        raise DatasetRegistryError(f"source {source!r} needs --path: the folder with its files")
    if karpathy_split is not None and source != "coco_official":
        raise DatasetRegistryError("--karpathy-split applies to source 'coco_official' only")
    split_file = None
    if karpathy_split is not None:
        split_path = Path(karpathy_split).expanduser().resolve()
        if not split_path.is_file():
            raise DatasetRegistryError(f"Karpathy split file {split_path} does not exist")
        split_file = str(split_path)
    lists, checksums = _paper_split_lists(source, split, split_lists, split_lists_sha256)
    try:
        dataset_folders(root, name)  # each resolves inside its data-root folder
    except UnsafePathError as error:
        raise DatasetRegistryError(f"dataset {name!r} refused: {error}") from None
    entry = DatasetEntry(
        name=name,
        source=source,  # type: ignore[arg-type]
        path=_existing_folder(path, f"dataset folder for {name!r}:") if path else None,
        karpathy_split=split_file,
        split=split,  # type: ignore[arg-type]
        split_lists=lists,
        split_lists_sha256=checksums,
    )
    entries[name] = entry
    save_registry(root, entries)
    return entry


def _paper_split_lists(
    source: str,
    split: str,
    split_lists: str | Path | None,
    sha256: dict[str, str] | None,
) -> tuple[str | None, dict[str, str] | None]:
    """The checked ``split_lists`` location and checksums of a ``coco`` entry."""
    from ops.data.coco_paper_split import PAPER_LISTS, check_list_checksums, is_url

    if split not in ("karpathy", "paper"):
        raise DatasetRegistryError(f"unknown split {split!r}; expected karpathy or paper")
    if split == "karpathy":
        if split_lists is not None or sha256:
            raise DatasetRegistryError("--split-lists applies to --split paper only")
        return None, None
    if source != "coco":
        raise DatasetRegistryError("--split paper applies to source 'coco' only")
    if split_lists is None:
        raise DatasetRegistryError(
            "--split paper needs --split-lists: a folder with train.txt, val.txt and test.txt, "
            "or a base URL of the three with --split-sha256 for each"
        )
    location = str(split_lists)
    if is_url(location):
        try:
            return location, check_list_checksums(sha256)
        except ValueError as error:
            raise DatasetRegistryError(str(error)) from None
    folder = Path(location).expanduser().resolve()
    missing = [name for name in PAPER_LISTS.values() if not (folder / name).is_file()]
    if missing:
        raise DatasetRegistryError(f"split lists folder {folder} lacks {', '.join(missing)}")
    return str(folder), None


def dataset_folders(root: Path, name: str) -> list[Path]:
    """The data root's folders that belong to ``name`` alone (inputs the user keeps elsewhere,
    such as a custom dataset's own folder, are never among them): its raw files, tables,
    features, proposals, graph and retrieval index, and its training runs' checkpoints and
    reports."""
    root = Path(root)
    folders = [raw_dir(root, name), tables_dir(root, name), features_dir(root, name)]
    folders.append(index_dir(root, name))
    folders += [derived_dir(root, name, table) for table in DERIVED_FOLDERS]
    for run_id in dataset_run_ids(root, name):
        folders += [checkpoint_dir(root, run_id), report_dir(root, run_id)]
    return [folder for folder in folders if folder.exists()]


def dataset_run_ids(root: Path, name: str) -> list[str]:
    runs = read_result(root, "training_runs")
    return sorted(runs.loc[runs["dataset"] == name, "run_id"])
