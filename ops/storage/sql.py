"""Read-only SQL over ``results.duckdb``: what ``twobranch sql`` runs.

Three locks, each enough alone for its class of statement: only ``SELECT``-like statements are
accepted (checked on DuckDB's own parse, not on text); the connection is read-only; and
external access is limited to the data root's own folders with the configuration locked, so a
query cannot read arbitrary files, ``COPY … TO`` anywhere, ``ATTACH`` or ``INSTALL``.

And two bounds, so one query cannot hold a shared machine: a time limit (the query is
interrupted from a timer thread) and a memory limit, both set before the configuration is
locked, one statement per call.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd

from ops.storage import snapshots
from ops.storage.paths import DERIVED_FOLDERS, SNAPSHOTS, results_db
from ops.storage.results_store import connect_leased, ensure_catalogue

ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}
LOCK_RETRY_SECONDS = 10.0
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MEMORY_LIMIT = "4GB"


class QueryRefused(ValueError):
    """The statement is not a read-only query."""


class QueryStopped(RuntimeError):
    """The query ran into its time or memory limit."""


def _statement_types(sql: str) -> list[str]:
    parser = duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryRefused(f"cannot parse query: {error}") from error
    finally:
        parser.close()
    return [str(s.type).rsplit(".", 1)[-1] for s in statements]


def check_read_only(sql: str) -> None:
    types = _statement_types(sql)
    if not types:
        raise QueryRefused("empty query")
    if len(types) > 1:
        raise QueryRefused(f"one statement per call; got {len(types)}")
    refused = [t for t in types if t not in ALLOWED_STATEMENTS]
    if refused:
        raise QueryRefused(
            f"only read-only queries (SELECT) are allowed; refused statement type(s): "
            f"{', '.join(refused)}. The results database is written by the pipeline alone."
        )


def _connect(root: Path) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            return duckdb.connect(str(results_db(root)), read_only=True)
        except duckdb.IOException:
            # The catalogue is being swapped in; a fresh one appears within moments.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _open_read_only(root: Path, memory_limit: str) -> tuple[duckdb.DuckDBPyConnection, int | None]:
    """A locked-down connection, and the reader lease on the snapshot its catalogue reads
    (held until the query ends, so a publish meanwhile does not take its files away)."""
    ensure_catalogue(root)
    con, lease = connect_leased(root, lambda: _connect(root))
    folders = ("tables", "results", "features", SNAPSHOTS, *DERIVED_FOLDERS.values())
    allowed = [str(root / sub) + "/" for sub in folders]
    try:
        con.execute("SET memory_limit = ?", [memory_limit])
    except duckdb.Error as error:
        con.close()
        snapshots.release(lease)
        raise QueryRefused(f"invalid memory limit {memory_limit!r}: {error}") from error
    con.execute("SET allowed_directories = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con, lease


def run_query(
    root: Path,
    sql: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> pd.DataFrame:
    """Run one read-only query and return its rows, within ``timeout`` seconds and
    ``memory_limit`` (a DuckDB size such as ``"4GB"``)."""
    if timeout <= 0:
        raise QueryRefused(f"the time limit must be positive; got {timeout:g} s")
    check_read_only(sql)
    con, lease = _open_read_only(root, memory_limit)
    timer = threading.Timer(timeout, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        return con.execute(sql).fetchdf()
    except duckdb.InterruptException as error:
        raise QueryStopped(
            f"query stopped at the time limit of {timeout:g} s; raise it with --timeout SECONDS"
        ) from error
    except duckdb.OutOfMemoryException as error:
        raise QueryStopped(
            f"query needs more than the memory limit of {memory_limit}; "
            "raise it with --memory-limit SIZE (e.g. 8GB)"
        ) from error
    except duckdb.PermissionException as error:
        raise QueryRefused(f"query refused: {error}") from error
    finally:
        timer.cancel()
        con.close()
        snapshots.release(lease)


def format_frame(frame: pd.DataFrame, fmt: str = "table", max_rows: int = 200) -> str:
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", indent=None) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
        return buffer.getvalue()
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; use table, csv or json")
    shown = frame.head(max_rows)
    if shown.empty:
        text = " | ".join(map(str, shown.columns)) or "(no columns)"
    else:
        text = shown.to_string(index=False, max_colwidth=60)
    footer = f"({len(frame)} row{'s' if len(frame) != 1 else ''})"
    if len(frame) > max_rows:
        footer = f"(first {max_rows} of {len(frame)} rows)"
    return f"{text}\n{footer}\n"
