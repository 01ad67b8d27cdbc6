"""Removing a dataset: unregistering its name and, on request, purging its files under the
data root and its runs' rows from the result tables."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from ops.data.registry import (
    DEFAULT_DATASET,
    DatasetRegistryError,
    check_name,
    dataset_folders,
    dataset_run_ids,
    get_dataset,
    load_registry,
    registry_path,
    save_registry,
)
from ops.storage.paths import UnsafePathError, result_file
from ops.storage.results_store import RESULT_SCHEMAS, publish_catalogue, read_result
from ops.storage.run_records import champion_key


def _dataset_result_files(root: Path, name: str) -> list[Path]:
    """Every result row file of the dataset's runs, and its champion records."""
    files = [
        result_file(root, table, run_id)
        for run_id in dataset_run_ids(root, name)
        for table in RESULT_SCHEMAS
    ]
    champions = read_result(root, "champions")
    mine = champions[champions["dataset"] == name]
    files += [
        result_file(root, "champions", champion_key(row.task, row.network, name))
        for row in mine.itertuples()
    ]
    return [path for path in files if path.exists()]


def remove_dataset(
    root: Path, name: str, purge: bool = False, runs_in_progress: Sequence[str] = ()
) -> list[Path]:
    """Unregister ``name``; with ``purge`` also delete its folders under the data root and its
    runs' rows from the result tables. Returns what was deleted.

    A purge is refused while ``runs_in_progress`` (the caller's list of the dataset's runs that
    have not ended) is not empty: a running step would write the files again. A name that is no
    longer registered can still be purged of what is left of it. Every path is checked to lie
    inside its data-root folder before anything is deleted."""
    check_name(name)
    if name == DEFAULT_DATASET:
        raise DatasetRegistryError(f"{DEFAULT_DATASET!r} is built in and cannot be removed")
    entries = load_registry(root)
    registered = name in entries
    if not registered and not purge:
        get_dataset(root, name)  # the "not registered" error
    if purge and runs_in_progress:
        raise DatasetRegistryError(
            f"dataset {name!r} has a run in progress: {', '.join(runs_in_progress)}; its steps "
            "would write the dataset's files again. Wait for it to end or terminate it (Dagster "
            "UI, Runs), then purge; nothing was changed"
        )
    try:
        removed = dataset_folders(root, name) if purge else []
        result_files = _dataset_result_files(root, name) if purge else []
    except UnsafePathError as error:
        raise DatasetRegistryError(f"purge of {name!r} refused: {error}") from None
    if not registered and not (removed or result_files):
        raise DatasetRegistryError(
            f"dataset {name!r} is not registered in {registry_path(root)} and nothing of it is "
            "left under the data root"
        )
    if registered:
        del entries[name]
        save_registry(root, entries)
    for path in result_files:
        path.unlink()
    for folder in removed:
        shutil.rmtree(folder)
    if purge:
        publish_catalogue(root)
    return removed + result_files
