"""`twobranch sql` is bounded: one statement, a time limit and a memory limit per call."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ops.cli import main
from ops.storage.results_store import publish_catalogue
from ops.storage.sql import QueryRefused, QueryStopped, run_query

ENDLESS = "SELECT sum(a.range * b.range) AS s FROM range(1000000000) a, range(1000000000) b"
# A list of ten million integers needs about 80 MB at once.
LARGE = "SELECT len(list(range)) AS n FROM range(10000000)"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    publish_catalogue(tmp_path)
    return tmp_path


def test_a_long_query_is_interrupted_at_the_time_limit(root: Path) -> None:
    started = time.monotonic()
    with pytest.raises(QueryStopped, match=r"time limit of 1 s; raise it with --timeout"):
        run_query(root, ENDLESS, timeout=1)
    assert time.monotonic() - started < 20


def test_cli_reports_the_time_limit_in_one_line(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["--data-root", str(root), "sql", ENDLESS, "--timeout", "1"]) == 2
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "time limit of 1 s" in err and "--timeout" in err


@pytest.mark.parametrize("query", ["SELECT 1; SELECT 2", "SELECT 1; SELECT 2; SELECT 3"])
def test_more_than_one_statement_is_refused(root: Path, query: str) -> None:
    count = query.count(";") + 1
    with pytest.raises(QueryRefused, match=f"one statement per call; got {count}"):
        run_query(root, query)


def test_cli_refuses_two_statements(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-root", str(root), "sql", "SELECT 1; SELECT 2"]) == 2
    assert "one statement per call; got 2" in capsys.readouterr().err


def test_the_memory_limit_is_set_on_the_connection(root: Path) -> None:
    setting = "SELECT current_setting('memory_limit') AS m"
    assert run_query(root, setting)["m"][0] == "3.7 GiB"  # the 4GB default, as DuckDB shows it
    assert run_query(root, setting, memory_limit="512MiB")["m"][0] == "512.0 MiB"


def test_a_query_over_the_memory_limit_fails_clearly(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_query(root, LARGE)["n"][0] == 10_000_000
    with pytest.raises(QueryStopped, match=r"memory limit of 20MB; raise it with --memory-limit"):
        run_query(root, LARGE, memory_limit="20MB")
    assert main(["--data-root", str(root), "sql", LARGE, "--memory-limit", "20MB"]) == 2
    assert "--memory-limit" in capsys.readouterr().err


@pytest.mark.parametrize(("timeout", "memory_limit"), [(0, "4GB"), (60, "four gigabytes")])
def test_invalid_limits_are_refused(root: Path, timeout: float, memory_limit: str) -> None:
    with pytest.raises(QueryRefused, match="time limit|memory limit"):
        run_query(root, "SELECT 1", timeout=timeout, memory_limit=memory_limit)
