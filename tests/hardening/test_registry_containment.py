"""The registry trusts nothing it reads: names match one rule in full wherever they are read,
every path derived from a name stays inside its data-root folder, and a purge waits for the
dataset's runs to end."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.cli import main
from assets.partitions import PARTITION_TAG
from ops.data.purge import remove_dataset
from ops.data.registry import (
    DatasetRegistryError,
    add_dataset,
    check_name,
    load_registry,
    registry_path,
)
from tests.hardening.custom_dataset import write_custom_dataset
from tests.hardening.test_sql import _run_row


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _victim(tmp_path: Path, name: str = "victim") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["nl\n", "ok\n\n", "tab\t", "a/b", "..", "../x", "/abs", "é"])
def test_a_name_must_match_the_rule_in_full(tmp_path: Path, root: Path, name: str) -> None:
    folder = write_custom_dataset(tmp_path / "photos")
    with pytest.raises(DatasetRegistryError, match="is not allowed"):
        add_dataset(root, name, "custom", folder)
    assert not registry_path(root).exists()
    with pytest.raises(DatasetRegistryError, match="is not allowed"):
        check_name(name)


def test_cli_refuses_a_name_with_a_trailing_newline(
    tmp_path: Path, root: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_custom_dataset(tmp_path / "photos")
    args = ["--data-root", str(root), "dataset", "add", "nl\n", "--source", "custom"]
    assert main([*args, "--path", str(folder)]) == 2
    assert "is not allowed" in _one_line(capsys.readouterr().err)
    assert not (root / "tables").exists() and not registry_path(root).exists()


@pytest.mark.parametrize("bad", ["../../victim", "ABSOLUTE", "nl\n", "sub/dir"])
def test_a_hand_edited_bad_entry_is_named_and_nothing_is_used(
    tmp_path: Path, root: Path, dagster_home: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _victim(tmp_path)
    name = str(victim) if bad == "ABSOLUTE" else bad
    folder = write_custom_dataset(tmp_path / "photos")
    add_dataset(root, "good", "custom", folder)
    document = json.loads(registry_path(root).read_text())
    document["datasets"].append({"name": name, "source": "custom", "path": str(folder)})
    registry_path(root).write_text(json.dumps(document))
    with pytest.raises(DatasetRegistryError, match="is not a valid dataset name") as caught:
        load_registry(root)
    assert repr(name) in str(caught.value) and "\n" not in str(caught.value)
    for command in (["list"], ["remove", "good", "--purge"], ["remove", name, "--purge"]):
        assert main(["--data-root", str(root), "dataset", *command]) == 2
        err = _one_line(capsys.readouterr().err)
        assert "is not allowed" in err or repr(name) in err
    assert (victim / "precious.txt").read_text() == "keep me"
    assert json.loads(registry_path(root).read_text()) == document


def test_purge_refuses_a_dataset_folder_that_links_outside(tmp_path: Path, root: Path) -> None:
    victim = _victim(tmp_path)
    add_dataset(root, "photos", "custom", write_custom_dataset(tmp_path / "photos"))
    before = registry_path(root).read_bytes()
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "photos").symlink_to(victim, target_is_directory=True)
    (root / "features" / "photos").mkdir(parents=True)
    with pytest.raises(DatasetRegistryError, match=r"refused: 'photos' does not name a folder"):
        remove_dataset(root, "photos", purge=True)
    assert (victim / "precious.txt").exists() and (root / "features" / "photos").is_dir()
    assert registry_path(root).read_bytes() == before


def test_purge_refuses_a_run_id_that_leads_outside(tmp_path: Path, root: Path) -> None:
    """A run id read from a (hand-edited) result file names checkpoint and report folders."""
    victim = _victim(tmp_path)  # checkpoints/../../victim from the data root
    add_dataset(root, "photos", "custom", write_custom_dataset(tmp_path / "photos"))
    run = _run_row("../../victim", 1.0).assign(dataset="photos")
    (root / "results" / "training_runs").mkdir(parents=True)
    run.to_parquet(root / "results" / "training_runs" / "evil.parquet")
    with pytest.raises(DatasetRegistryError, match="does not name a folder inside"):
        remove_dataset(root, "photos", purge=True)
    assert (victim / "precious.txt").exists()
    assert "photos" in load_registry(root)


def _started_run(home: Path, dataset: str) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="full_pipeline",
        status=dg.DagsterRunStatus.STARTED,
        tags={PARTITION_TAG: dataset},
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_run(run)
    return run


def test_purge_waits_for_the_datasets_run_to_end(
    tmp_path: Path, root: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_dataset(root, "photos", "custom", write_custom_dataset(tmp_path / "photos"))
    (root / "tables" / "photos").mkdir(parents=True)
    before = registry_path(root).read_bytes()
    run = _started_run(dagster_home, "photos")
    _started_run(dagster_home, "other")  # another dataset's run does not matter
    assert main(["--data-root", str(root), "dataset", "remove", "photos", "--purge"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"run in progress: {run.run_id} (full_pipeline, STARTED)" in err
    assert (root / "tables" / "photos").is_dir() and registry_path(root).read_bytes() == before
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    assert main(["--data-root", str(root), "dataset", "remove", "photos", "--purge"]) == 0
    assert not (root / "tables" / "photos").exists() and "photos" not in load_registry(root)


def test_leftovers_of_an_unregistered_name_can_be_purged(
    tmp_path: Path, root: Path, dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind in ("tables", "features", "graph"):
        (root / kind / "ghost").mkdir(parents=True)
    (root / "tables" / "keep").mkdir()
    orphan = _run_row("run-ghost", 1.0).assign(dataset="ghost")
    (root / "results" / "training_runs").mkdir(parents=True)
    orphan.to_parquet(root / "results" / "training_runs" / "run-ghost.parquet")
    assert main(["--data-root", str(root), "dataset", "remove", "ghost"]) == 2
    assert "not registered" in _one_line(capsys.readouterr().err)
    assert main(["--data-root", str(root), "dataset", "remove", "ghost", "--purge"]) == 0
    assert not any((root / kind / "ghost").exists() for kind in ("tables", "features", "graph"))
    assert not (root / "results" / "training_runs" / "run-ghost.parquet").exists()
    assert (root / "tables" / "keep").is_dir()
    assert main(["--data-root", str(root), "dataset", "remove", "ghost", "--purge"]) == 2
    assert "nothing of it is left" in _one_line(capsys.readouterr().err)


def test_orphan_rows_disappear_from_sql_after_the_purge(tmp_path: Path, root: Path) -> None:
    from ops.storage.results_store import publish_catalogue
    from ops.storage.sql import run_query

    orphan = _run_row("run-ghost", 1.0).assign(dataset="ghost")
    (root / "results" / "training_runs").mkdir(parents=True)
    orphan.to_parquet(root / "results" / "training_runs" / "run-ghost.parquet")
    publish_catalogue(root)
    query = "SELECT count(*) AS n FROM training_runs WHERE dataset = 'ghost'"
    assert run_query(root, query)["n"][0] == 1
    remove_dataset(root, "ghost", purge=True)
    assert run_query(root, query)["n"][0] == 0
