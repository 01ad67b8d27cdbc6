"""A data root can be copied or moved: queries on the copy read the copy's own files."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd

from ops.data.dataset_store import publish_dataset_tables
from ops.storage.paths import results_db
from ops.storage.results_store import catalogue_is_current, publish_catalogue, write_result
from ops.storage.sql import run_query
from tests.hardening.dataset_versions import dataset_version, expected_view, visible_view

RUNS = "SELECT run_id, best_val_score FROM training_runs ORDER BY run_id"


def _run_row(run_id: str) -> pd.DataFrame:
    now = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "task": "image_sentence",
                "network": "embedding",
                "dataset": "demo",
                "config": "{}",
                "device": "cpu",
                "started_at": now,
                "finished_at": now,
                "status": "finished",
                "best_epoch": 1,
                "best_val_score": 42.0,
                "checkpoint": "",
                "features": "{}",
                "world_size": 1,
                "validation_scope": None,
                "champion_reason": None,
            }
        ]
    )


def _data_root(root: Path) -> Path:
    publish_dataset_tables(root, dataset_version(1))
    write_result(root, "training_runs", "run-a", _run_row("run-a"))
    publish_catalogue(root)
    return root


def test_a_copied_root_answers_after_the_original_is_gone(tmp_path: Path) -> None:
    original = _data_root(tmp_path / "data")
    runs = run_query(original, RUNS)
    copy = tmp_path / "elsewhere" / "data"
    shutil.copytree(original, copy)
    original.rename(tmp_path / "gone")
    assert visible_view(copy) == expected_view(1)
    pd.testing.assert_frame_equal(run_query(copy, RUNS), runs)


def test_a_copy_reads_its_own_files_while_the_original_changes(tmp_path: Path) -> None:
    original = _data_root(tmp_path / "data")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    publish_dataset_tables(original, dataset_version(2))
    assert visible_view(copy) == expected_view(1)
    assert visible_view(original) == expected_view(2)


def test_a_catalogue_without_a_root_marker_is_rebuilt(tmp_path: Path) -> None:
    root = _data_root(tmp_path / "data")
    results_db(root).unlink()
    con = duckdb.connect(str(results_db(root)))  # as catalogues were written before the marker
    con.execute("CREATE VIEW training_runs AS SELECT 1 AS run_id")
    con.close()
    assert not catalogue_is_current(root)
    assert run_query(root, RUNS)["run_id"].tolist() == ["run-a"]
    assert catalogue_is_current(root)
