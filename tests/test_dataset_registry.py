"""The dataset registry and the ``twobranch dataset`` commands."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from assets.partitions import DATASETS
from ops.data.purge import remove_dataset
from ops.data.registry import (
    DatasetRegistryError,
    add_dataset,
    get_dataset,
    load_registry,
    registry_path,
)
from ops.storage.results_store import publish_catalogue, utc_now
from ops.storage.run_records import promote_if_better, write_epochs, write_run
from ops.storage.sql import run_query
from tests.hardening.custom_dataset import write_custom_dataset


def _partitions(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sorted(instance.get_dynamic_partitions(DATASETS.name))


def test_synthetic_is_always_registered(tmp_path: Path) -> None:
    entries = load_registry(tmp_path)
    assert list(entries) == ["synthetic"] and entries["synthetic"].source == "synthetic"
    assert not registry_path(tmp_path).exists()


def test_add_list_and_remove_keep_datasets_side_by_side(tmp_path: Path) -> None:
    first, second = write_custom_dataset(tmp_path / "a"), write_custom_dataset(tmp_path / "b")
    add_dataset(tmp_path, "photos_a", "custom", first)
    add_dataset(tmp_path, "photos-b.v2", "custom", second)
    entries = load_registry(tmp_path)
    assert sorted(entries) == ["photos-b.v2", "photos_a", "synthetic"]
    assert entries["photos_a"].path == str(first.resolve())
    assert get_dataset(tmp_path, "photos-b.v2").path == str(second.resolve())
    remove_dataset(tmp_path, "photos_a")
    assert sorted(load_registry(tmp_path)) == ["photos-b.v2", "synthetic"]
    assert first.is_dir()  # the user's own folder is never touched


@pytest.mark.parametrize(
    ("name", "source", "path", "message"),
    [
        ("taken", "custom", "folder", "already registered"),
        ("new", "custom", "missing", "is not a folder"),
        ("new", "imagenet", "folder", "unknown source 'imagenet'"),
        ("new", "custom", None, "needs --path"),
        ("a/b", "custom", "folder", "is not allowed"),
        ("my photos", "custom", "folder", "is not allowed"),
        (".hidden", "custom", "folder", "is not allowed"),
        ("synthetic", "custom", "folder", "already registered"),
    ],
)
def test_bad_registrations_are_clear_errors_that_change_nothing(
    tmp_path: Path, name: str, source: str, path: str | None, message: str
) -> None:
    folder = write_custom_dataset(tmp_path / "folder")
    add_dataset(tmp_path, "taken", "custom", folder)
    before = registry_path(tmp_path).read_bytes()
    with pytest.raises(DatasetRegistryError, match=message):
        add_dataset(tmp_path, name, source, None if path is None else tmp_path / path)
    assert registry_path(tmp_path).read_bytes() == before


def test_unknown_and_builtin_datasets_cannot_be_removed(tmp_path: Path) -> None:
    with pytest.raises(DatasetRegistryError, match="not registered"):
        remove_dataset(tmp_path, "nothing")
    with pytest.raises(DatasetRegistryError, match="built in"):
        remove_dataset(tmp_path, "synthetic")


def test_purge_deletes_the_datasets_folders_under_the_data_root_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = write_custom_dataset(tmp_path / "mine")
    add_dataset(root, "mine", "custom", folder)
    add_dataset(root, "other", "custom", folder)
    for kind in ("tables", "features", "proposals", "graph"):
        for name in ("mine", "other"):
            (root / kind / name).mkdir(parents=True)
            (root / kind / name / "x.parquet").write_bytes(b"x")
    removed = remove_dataset(root, "mine", purge=True)
    assert sorted(p.relative_to(root).as_posix() for p in removed) == [
        "features/mine",
        "graph/mine",
        "proposals/mine",
        "tables/mine",
    ]
    assert all((root / kind / "other" / "x.parquet").exists() for kind in ("tables", "graph"))
    assert (folder / "data.json").exists()


def test_purge_deletes_the_datasets_runs_and_their_rows(tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = write_custom_dataset(tmp_path / "mine")
    for name in ("mine", "other"):
        add_dataset(root, name, "custom", folder)
        run_id = f"run-{name}"
        write_run(root, run_id, task="image_sentence", network="embedding", dataset=name,
                  config={}, device="cpu", status="finished", started_at=utc_now())  # fmt: skip
        write_epochs(
            root, run_id, [{"epoch": 1, "loss": 0.5, "val_score": 10.0, "lr": 1e-3, "seconds": 1.0}]
        )
        promote_if_better(root, run_id, "image_sentence", "embedding", name, 10.0)
        (root / "checkpoints" / run_id).mkdir(parents=True)
    publish_catalogue(root)
    removed = remove_dataset(root, "mine", purge=True)
    assert root / "checkpoints" / "run-mine" in removed
    assert not (root / "checkpoints" / "run-mine").exists()
    assert (root / "checkpoints" / "run-other").exists()
    for table in ("training_runs", "epoch_metrics", "champions"):
        rows = run_query(root, f"SELECT DISTINCT run_id FROM {table}")
        assert rows["run_id"].tolist() == ["run-other"], table


def test_cli_registers_datasets_as_dagster_partitions(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    folder = write_custom_dataset(tmp_path / "mine")
    assert main(["--data-root", str(root), "dataset", "add", "mine", "--source", "custom",
                 "--path", str(folder)]) == 0  # fmt: skip
    assert "dagster/partition" in capsys.readouterr().out
    assert _partitions(dagster_home) == ["mine", "synthetic"]
    assert main(["--data-root", str(root), "dataset", "list"]) == 0
    listing = capsys.readouterr().out
    assert "mine" in listing and str(folder.resolve()) in listing and "synthetic" in listing

    assert main(["--data-root", str(root), "dataset", "remove", "mine"]) == 0
    assert _partitions(dagster_home) == ["synthetic"]
    assert list(load_registry(root)) == ["synthetic"]


def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    code = main(["--data-root", str(root), "dataset", "add", "x/y", "--source", "custom",
                 "--path", str(tmp_path)])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "'x/y' is not allowed" in error
    assert not registry_path(root).exists()
    assert main(["--data-root", str(root), "dataset", "remove", "ghost"]) == 2
    assert "not registered" in capsys.readouterr().err


def test_sync_adds_the_default_dataset(tmp_path: Path, dagster_home: Path) -> None:
    assert main(["--data-root", str(tmp_path / "data"), "dataset", "sync"]) == 0
    assert _partitions(dagster_home) == ["synthetic"]
