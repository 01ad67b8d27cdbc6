"""The read-only SQL face: views over Parquet, refusals, and readers during writes."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from ops.cli import main
from ops.storage.results_store import publish_catalogue, read_result, write_result
from ops.storage.sql import QueryRefused, run_query


def _run_row(run_id: str, rsum: float) -> pd.DataFrame:
    now = pd.Timestamp("2026-01-01", tz="UTC")
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "task": "image_sentence",
                "network": "embedding",
                "dataset": "synthetic",
                "config": "{}",
                "device": "cpu",
                "started_at": now,
                "finished_at": now,
                "status": "finished",
                "best_epoch": 3,
                "best_val_score": rsum,
                "checkpoint": f"/x/{run_id}/best.pt",
                "features": "{}",
                "world_size": 1,
                "validation_scope": None,
                "champion_reason": None,
            }
        ]
    )


def test_empty_catalogue_has_every_contract_view(tmp_path: Path) -> None:
    publish_catalogue(tmp_path)
    for view in (
        "images",
        "captions",
        "phrases",
        "rejects",
        "training_runs",
        "epoch_metrics",
        "retrieval_metrics",
        "retrieval_ranks",
        "localization_metrics",
        "localization_results",
        "neighbors",
        "region_proposals",
    ):
        assert run_query(tmp_path, f"SELECT count(*) AS n FROM {view}")["n"][0] == 0


def test_written_rows_are_queryable(tmp_path: Path) -> None:
    write_result(tmp_path, "training_runs", "run-a", _run_row("run-a", 120.5))
    write_result(tmp_path, "training_runs", "run-b", _run_row("run-b", 99.0))
    publish_catalogue(tmp_path)
    frame = run_query(
        tmp_path, "SELECT run_id, best_val_score, champion FROM training_runs ORDER BY 1"
    )
    assert frame["run_id"].tolist() == ["run-a", "run-b"]
    assert frame["best_val_score"].tolist() == [120.5, 99.0]
    assert frame["champion"].tolist() == [False, False]
    assert len(read_result(tmp_path, "training_runs")) == 2


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO training_runs_raw SELECT * FROM training_runs_raw",
        "UPDATE captions SET text = 'x'",
        "DELETE FROM captions",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW captions",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY (SELECT 1) TO '/tmp/twobranch-copy.csv'",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "SELECT 1; DELETE FROM captions",
    ],
)
def test_writes_and_ddl_are_refused(tmp_path: Path, query: str) -> None:
    publish_catalogue(tmp_path)
    with pytest.raises(QueryRefused):
        run_query(tmp_path, query)
    assert not Path("/tmp/twobranch-copy.csv").exists()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
    ],
)
def test_reading_files_outside_the_data_root_is_refused(tmp_path: Path, query: str) -> None:
    publish_catalogue(tmp_path)
    with pytest.raises(QueryRefused, match="disabled by configuration|Permission"):
        run_query(tmp_path, query)


def test_cli_prints_table_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_result(tmp_path, "training_runs", "run-a", _run_row("run-a", 120.5))
    publish_catalogue(tmp_path)
    query = "SELECT run_id, best_val_score FROM training_runs"
    assert main(["--data-root", str(tmp_path), "sql", query]) == 0
    assert "run-a" in capsys.readouterr().out
    assert main(["--data-root", str(tmp_path), "sql", query, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["run_id,best_val_score", "run-a,120.5"]
    assert main(["--data-root", str(tmp_path), "sql", query, "--format", "json"]) == 0
    assert '"best_val_score":120.5' in capsys.readouterr().out
    assert main(["--data-root", str(tmp_path), "sql", "DELETE FROM captions"]) == 2
    assert "only read-only queries" in capsys.readouterr().err


def test_readers_never_see_half_a_run_or_a_lock_error(tmp_path: Path) -> None:
    """A writer replaces a run's rows and rebuilds the catalogue over and over while readers
    query: every read sees a complete run (all rows of one version) and no reader fails."""
    rows = 500

    def version(v: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "run_id": "run-a",
                "method": "single_stage",
                "protocol": "1k",
                "fold": 0,
                "direction": "t2i",
                "query_id": [str(i) for i in range(rows)],
                "rank": v,
                "top1_id": "x",
            }
        )

    write_result(tmp_path, "retrieval_ranks", "run-a", version(1))
    publish_catalogue(tmp_path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        v = 1
        while not stop.is_set():
            v += 1
            write_result(tmp_path, "retrieval_ranks", "run-a", version(v))
            publish_catalogue(tmp_path)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    try:
        for _ in range(40):
            try:
                frame = run_query(
                    tmp_path,
                    "SELECT count(*) AS n, min(rank) AS lo, max(rank) AS hi FROM retrieval_ranks",
                )
            except BaseException as error:  # noqa: BLE001 - any failure is the test's finding
                errors.append(error)
                continue
            seen.append(tuple(frame.iloc[0]))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert all(n == rows and lo == hi for n, lo, hi in seen)


def test_runs_stored_before_the_score_rename_read_under_both_names(tmp_path: Path) -> None:
    """Files written with the old column name (``best_val_rsum``, ``val_rsum``) keep their
    values under the new names, and the old names stay queryable as aliases."""
    old = _run_row("run-old", 61.5).rename(columns={"best_val_score": "best_val_rsum"})
    old_path = tmp_path / "results" / "training_runs" / "run-old.parquet"
    old_path.parent.mkdir(parents=True)
    old.to_parquet(old_path)
    old_champion = (
        tmp_path / "results" / "champions" / "phrase_region__embedding__synthetic.parquet"
    )
    old_champion.parent.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "task": "phrase_region",
                "network": "embedding",
                "dataset": "synthetic",
                "run_id": "run-old",
                "val_rsum": 61.5,
                "previous_run_id": None,
                "previous_val_rsum": None,
                "promoted_at": pd.Timestamp("2026-01-01", tz="UTC"),
                "reason": "first model",
            }
        ]
    ).to_parquet(old_champion)
    write_result(tmp_path, "training_runs", "run-new", _run_row("run-new", 120.5))
    publish_catalogue(tmp_path)
    frame = run_query(
        tmp_path,
        "SELECT run_id, best_val_score, best_val_rsum FROM training_runs ORDER BY run_id",
    )
    assert frame.to_dict("list") == {
        "run_id": ["run-new", "run-old"],
        "best_val_score": [120.5, 61.5],
        "best_val_rsum": [120.5, 61.5],
    }
    champions = run_query(tmp_path, "SELECT val_score, val_rsum FROM champions")
    assert champions.to_dict("list") == {"val_score": [61.5], "val_rsum": [61.5]}
    stored = read_result(tmp_path, "training_runs").set_index("run_id")["best_val_score"]
    assert stored.to_dict() == {"run-new": 120.5, "run-old": 61.5}
    assert "best_val_rsum" not in read_result(tmp_path, "training_runs").columns
