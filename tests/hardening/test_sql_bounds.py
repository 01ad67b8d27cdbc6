"""`twobranch sql` limits hold for the whole query, only finite positive limits are taken,
every read-only statement type runs, and a missing data root is named, not created."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cli import main
from ops.storage.results_store import publish_catalogue, write_result
from ops.storage.sql import QueryRefused, QueryStopped, memory_limit_bytes, run_query
from tests.hardening.test_sql import _run_row


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for run_id, status in [("a", "finished"), ("b", "finished"), ("c", "failed")]:
        write_result(tmp_path, "training_runs", run_id, _run_row(run_id, 1.0).assign(status=status))
    publish_catalogue(tmp_path)
    return tmp_path


# Each builds a value far larger than the limit outside DuckDB's buffer manager, which its own
# memory_limit does not see: only the process's address-space cap stops them.
@pytest.mark.parametrize(
    ("query", "limit"),
    [
        ("SELECT len(range(300000000)) AS n", "200MB"),
        ("SELECT len(range(30000000)) AS n", "50MB"),
        ("SELECT length(repeat('x', 400000000)) AS n", "50MB"),
    ],
)
def test_memory_built_outside_duckdbs_buffers_is_stopped_at_the_limit(
    root: Path, query: str, limit: str
) -> None:
    # The time limit is far away: the query must stop for memory, not time.
    with pytest.raises(QueryStopped, match=f"memory limit of {limit}; raise it with"):
        run_query(root, query, timeout=120, memory_limit=limit)


def test_the_same_query_runs_within_a_larger_limit(root: Path) -> None:
    assert run_query(root, "SELECT len(range(3000000)) AS n", memory_limit="1GB")["n"][0] == (
        3_000_000
    )


def test_cli_memory_stop_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = "SELECT length(repeat('x', 400000000)) AS n"
    assert main(["--data-root", str(root), "sql", query, "--memory-limit", "50MB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "memory limit of 50MB" in err


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "-1", "0"])
def test_a_time_limit_that_is_not_finite_and_positive_is_refused(
    root: Path, timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-root", str(root), "sql", "SELECT 1", f"--timeout={timeout}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "invalid time limit" in err and "finite positive" in err


@pytest.mark.parametrize("limit", ["nan", "inf", "infGB", "nanMB", "-5MB", "0MB", "0", "4"])
def test_a_memory_limit_that_is_not_a_positive_size_is_refused(
    root: Path, limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-root", str(root), "sql", "SELECT 1", f"--memory-limit={limit}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"invalid memory limit {limit!r}" in err


def test_memory_sizes_use_duckdbs_units() -> None:
    assert memory_limit_bytes("200MB") == 200_000_000
    assert memory_limit_bytes("1.5GB") == 1_500_000_000
    assert memory_limit_bytes("512MiB") == 512 * 2**20
    assert memory_limit_bytes(" 2 gib ") == 2 * 2**30


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # a PIVOT whose columns come from the data: DuckDB parses it as several statements
        ("PIVOT training_runs ON status USING count(*) ORDER BY 1", {"failed": 1, "finished": 2}),
        ("PIVOT_WIDER training_runs ON status USING count(*)", {"failed": 1, "finished": 2}),
        (
            "SELECT * FROM (PIVOT training_runs ON status USING count(*)) AS p",
            {"failed": 1, "finished": 2},
        ),
        ("PIVOT training_runs ON status IN ('failed') USING count(*)", {"failed": 1}),
    ],
)
def test_pivot_runs(root: Path, query: str, expected: dict[str, int]) -> None:
    frame = run_query(root, query)
    assert {name: int(frame[name].sum()) for name in expected} == expected


@pytest.mark.parametrize(
    ("query", "rows"),
    [
        ("UNPIVOT (SELECT 1 AS a, 2 AS b) ON a, b INTO NAME k VALUE v", 2),
        ("SHOW TABLES", None),
        ("EXPLAIN SELECT * FROM training_runs", 1),
        ("EXPLAIN PIVOT training_runs ON status USING count(*)", 1),
        ("PRAGMA show_tables", None),
        ("CALL pragma_version()", 1),
        ("FROM training_runs", 3),
        ("VALUES (1), (2)", 2),
        ("PIVOT training_runs ON status USING count(*);", 3),
    ],
)
def test_every_read_only_statement_type_runs(root: Path, query: str, rows: int | None) -> None:
    frame = run_query(root, query)
    assert len(frame) == rows if rows is not None else len(frame) > 5


@pytest.mark.parametrize("query", ["SUMMARIZE", "DESCRIBE", "SHOW"])
def test_describing_a_view_runs(root: Path, query: str) -> None:
    frame = run_query(root, f"{query} training_runs")
    assert {"run_id", "status", "best_val_score"} <= set(frame["column_name"])


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO training_runs_raw PIVOT training_runs ON status USING count(*)",
        "CREATE TABLE y AS PIVOT training_runs ON status USING count(*)",
        "COPY (PIVOT training_runs ON status USING count(*)) TO '/tmp/twobranch-pivot.csv'",
        "CREATE TEMP TABLE z AS SELECT 1",
        "PRAGMA memory_limit = '100GB'",
        "PRAGMA enable_profiling",
        "CALL enable_logging()",
    ],
)
def test_writes_and_settings_stay_refused(root: Path, query: str) -> None:
    with pytest.raises(QueryRefused):
        run_query(root, query)
    assert not Path("/tmp/twobranch-pivot.csv").exists()


def test_a_missing_data_root_is_named_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-root"
    with pytest.raises(QueryRefused, match=f"data root {missing} does not exist"):
        run_query(missing, "SELECT 1")
    assert main(["--data-root", str(missing), "sql", "SELECT count(*) FROM images"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err
    assert not missing.exists()
