"""Read-only SQL over ``results.duckdb``: what ``twobranch sql`` runs.

Three locks, each enough alone for its class of statement: only statements that read are
accepted (checked on DuckDB's own parse, not on text); the connection is read-only; and
external access is limited to the data root's own folders with the configuration locked, so a
query cannot read arbitrary files, ``COPY … TO`` anywhere, ``ATTACH``, ``INSTALL`` or change a
setting (``CALL`` and ``PRAGMA`` run functions, and those that would write or set something
meet the read-only connection or the locked configuration).

And two bounds that hold for the whole query, so one query cannot hold a shared machine: it
runs in a process of its own (:mod:`ops.storage.sql_worker`) whose address space is capped
just above DuckDB's ``memory_limit``, with a bounded number of threads, and that process is
killed at the time limit. One statement per call.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import pickle
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pandas as pd

import ops
from ops.storage.paths import DERIVED_FOLDERS, SNAPSHOTS, results_db
from ops.storage.results_store import ensure_catalogue
from ops.storage.sql_worker import QueryRequest

# Statement types that only read. SELECT covers DESCRIBE, SHOW, SUMMARIZE, UNPIVOT, VALUES,
# FROM-first and PIVOT with an IN list; MULTI (a PIVOT whose columns come from the data) is
# checked further by _is_query.
ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN", "MULTI", "PRAGMA", "CALL"}
DEFAULT_TIMEOUT_SECONDS = 60.0
DEFAULT_MEMORY_LIMIT = "4GB"
# A query takes at most this many cores of a shared machine (and the address-space cap grows
# with the threads).
MAX_THREADS = 4
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)\s*", re.IGNORECASE)


class QueryRefused(ValueError):
    """The statement is not a read-only query, or a limit or the data root is not usable."""


class QueryStopped(RuntimeError):
    """The query ran into its time or memory limit."""


def memory_limit_bytes(text: str) -> int:
    """``"200MB"``, ``"4GB"``, ``"512MiB"``… in bytes (DuckDB's units: KB = 1000 bytes,
    KiB = 1024); anything else, zero included, is refused."""
    match = _SIZE.fullmatch(str(text))
    unit = match and _UNITS.get(match.group(2).lower())
    value = float(match.group(1)) * unit if match and unit else 0.0
    if not math.isfinite(value) or int(value) <= 0:
        raise QueryRefused(
            f"invalid memory limit {text!r}: give a positive size with a unit, "
            "e.g. 512MB, 4GB or 1GiB"
        )
    return int(value)


def check_timeout(timeout: float) -> float:
    """The time limit, refused unless a finite positive number of seconds."""
    if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise QueryRefused(
            f"invalid time limit {timeout!r}: give a finite positive number of seconds"
        )
    return float(timeout)


def _statement_types(sql: str) -> list[str]:
    parser = duckdb.connect(":memory:")
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryRefused(f"cannot parse query: {error}") from error
    finally:
        parser.close()
    return [str(s.type).rsplit(".", 1)[-1] for s in statements]


def _is_query(sql: str) -> bool:
    """Whether ``sql`` can stand as a subquery: a PIVOT (or a SELECT holding one) can, an
    ``INSERT``, ``CREATE`` or ``COPY`` around a PIVOT cannot. DuckDB parses a PIVOT whose
    columns come from the data as several statements (MULTI) and does not say which."""
    try:
        inner = sql.rstrip().rstrip(";")
        return _statement_types(f"SELECT * FROM (\n{inner}\n)") in (["SELECT"], ["MULTI"])
    except QueryRefused:
        return False


def check_read_only(sql: str) -> None:
    types = _statement_types(sql)
    if not types:
        raise QueryRefused("empty query")
    if len(types) > 1:
        raise QueryRefused(f"one statement per call; got {len(types)}")
    refused = [t for t in types if t not in ALLOWED_STATEMENTS]
    if types == ["MULTI"] and not _is_query(_without_explain(sql)):
        refused = types
    if refused:
        raise QueryRefused(
            f"only read-only queries (SELECT) are allowed; refused statement type(s): "
            f"{', '.join(refused)}. The results database is written by the pipeline alone."
        )


def _without_explain(sql: str) -> str:
    """``sql`` without a leading ``EXPLAIN [ANALYZE]`` (which DuckDB folds into MULTI too)."""
    return re.sub(r"^\s*EXPLAIN(\s+ANALYZE)?\s", " ", sql, count=1, flags=re.IGNORECASE)


def _request(root: Path, sql: str, memory_limit: int) -> QueryRequest:
    folders = ("tables", "results", "features", SNAPSHOTS, *DERIVED_FOLDERS.values())
    return QueryRequest(
        root=str(root),
        database=str(results_db(root)),
        allowed_directories=tuple(str(root / sub) + "/" for sub in folders),
        sql=sql,
        memory_limit_bytes=memory_limit,
        threads=max(1, min(MAX_THREADS, os.cpu_count() or 1)),
    )


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # Few malloc arenas and one BLAS thread, so the capped address space goes to the query.
    env.update(MALLOC_ARENA_MAX="2", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    package_parent = str(Path(ops.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


class _ForkServer:
    """The process that forks one query worker per query (``ops.storage.sql_worker.serve``),
    started on first use; one per calling process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = -1
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ops.storage.sql_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=_worker_env(),
            )
        self._control, self._owner = ours, os.getpid()

    def submit(self, request: QueryRequest) -> int:
        """Hand ``request`` to a fresh worker; returns the pipe its reply comes on."""
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            with self._lock:
                alive = self._process is not None and self._process.poll() is None
                if self._owner != os.getpid() or not alive:
                    self._start()
                assert self._control is not None
                socket.send_fds(self._control, [b"q"], [request_r, reply_w])
        except BaseException:
            os.close(reply_r)
            raise
        finally:
            os.close(request_r)
            os.close(reply_w)
        with os.fdopen(request_w, "wb") as outgoing:
            pickle.dump(request, outgoing)
        return reply_r


_SERVER = _ForkServer()
_PID_BYTES = struct.calcsize("<q")


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything ``fd`` gives until it closes or ``deadline`` passes; (data, closed)."""
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return b"".join(chunks), False
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def _memory_stop(memory_limit: str, detail: str) -> QueryStopped:
    return QueryStopped(
        f"query needs more than the memory limit of {memory_limit}; "
        f"raise it with --memory-limit SIZE (e.g. 8GB) [{detail}]"
    )


def _run_in_worker(request: QueryRequest, timeout: float, memory_limit: str) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    reply_fd = _SERVER.submit(request)
    try:
        data, finished = _read_until(reply_fd, deadline)
    finally:
        os.close(reply_fd)
    if not finished:
        if len(data) >= _PID_BYTES:
            with contextlib.suppress(ProcessLookupError):
                os.kill(struct.unpack("<q", data[:_PID_BYTES])[0], signal.SIGKILL)
        raise QueryStopped(
            f"query stopped at the time limit of {timeout:g} s; raise it with --timeout SECONDS"
        )
    if len(data) <= _PID_BYTES:
        # The worker died without a word: the kernel's OOM killer, or a crash under the cap.
        raise _memory_stop(memory_limit, "its process ended without an answer")
    reply = pickle.loads(data[_PID_BYTES:])  # written by our own worker process
    kind = reply[0]
    if kind == "rows":
        return reply[1]
    if kind == "memory":
        raise _memory_stop(memory_limit, reply[1])
    if kind == "refused":
        raise QueryRefused(f"query refused: {reply[1]}")
    if kind == "crash":
        raise RuntimeError(f"the query's process failed: {reply[1]}")
    error_class = getattr(duckdb, reply[1], duckdb.Error)
    raise error_class(reply[2])


def run_query(
    root: Path,
    sql: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> pd.DataFrame:
    """Run one read-only query and return its rows, within ``timeout`` seconds and
    ``memory_limit`` (a size such as ``"4GB"``) for the whole query."""
    timeout = check_timeout(timeout)
    limit = memory_limit_bytes(memory_limit)
    root = Path(root)
    if not root.is_dir():
        raise QueryRefused(
            f"data root {root} does not exist; give the one the pipeline wrote with "
            "--data-root DIR or TWOBRANCH_DATA"
        )
    check_read_only(sql)
    ensure_catalogue(root)
    return _run_in_worker(_request(root, sql, limit), timeout, memory_limit)


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
