"""The process one ``twobranch sql`` query runs in.

DuckDB's ``memory_limit`` bounds its buffer manager only: a long list or string built by a
function is allocated outside it and can grow without bound. So the query runs in a process of
its own whose address space is capped (``RLIMIT_AS``) just above that limit, after the
libraries are loaded and the connection is open: any allocation past the cap fails, which
DuckDB reports as out of memory, and the parent kills the process at the time limit.

Run as a module, it is a small fork server (:func:`serve`): a caller sends it two pipe ends
over a Unix socket; a forked child reads a pickled :class:`QueryRequest` from the first and
writes its process id, then a pickled reply, to the second: ``("rows", DataFrame)``,
``("refused", message)``, ``("memory", message)``, ``("error", exception class name,
message)`` or ``("crash", message)``. It imports duckdb, pandas and the catalogue module
(pyarrow), never torch or Dagster.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas  # noqa: F401 - loaded before the cap: fetchdf needs it, its import maps libraries

from ops.storage import snapshots

# Beyond DuckDB's own limit: room for the connection's threads and for the result as a
# DataFrame and its pickle. Measured: 16 threads add about 70 MiB while a query runs.
HEADROOM_BYTES = 96 * 2**20
HEADROOM_PER_THREAD_BYTES = 8 * 2**20
# DuckDB errors that mean "not allowed here", whichever lock caught the statement.
# The catalogue is swapped in by the pipeline now and then; a fresh one appears within moments.
LOCK_RETRY_SECONDS = 10.0
REFUSAL_MARKERS = ("read-only mode", "configuration has been locked", "disabled by configuration")


@dataclass(frozen=True)
class QueryRequest:
    """One query for the worker: what it runs, over which catalogue, within which limits."""

    root: str
    database: str
    allowed_directories: tuple[str, ...]
    sql: str
    memory_limit_bytes: int
    threads: int


def address_space_bytes() -> int:
    """The process's current virtual size (what ``RLIMIT_AS`` counts)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmSize")


def cap_address_space(memory_limit_bytes: int, threads: int) -> int:
    """Cap the address space at what is mapped now plus the query's allowance; returns it."""
    allowance = memory_limit_bytes + HEADROOM_BYTES + threads * HEADROOM_PER_THREAD_BYTES
    cap = address_space_bytes() + allowance
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def _open(request: QueryRequest) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    while True:
        try:
            return duckdb.connect(request.database, read_only=True)
        except duckdb.IOException:
            # The catalogue is being swapped in; a fresh one appears within moments.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _connect(request: QueryRequest) -> tuple[duckdb.DuckDBPyConnection, int | None]:
    """The locked-down connection, and the reader lease on the snapshot generation its
    catalogue reads: held by this process until the query ends (the kernel drops it if the
    process is killed), so a publish meanwhile does not take the query's files away."""
    from ops.storage.results_store import connect_leased

    con, lease = connect_leased(Path(request.root), lambda: _open(request))
    con.execute(f"SET memory_limit = '{int(request.memory_limit_bytes)}B'")
    con.execute(f"SET threads = {int(request.threads)}")
    con.execute("SET allowed_directories = ?", [list(request.allowed_directories)])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con, lease


def answer(request: QueryRequest) -> tuple:
    """Run the request's query under the cap; the reply (module docstring)."""
    con, lease = _connect(request)
    try:
        cap_address_space(request.memory_limit_bytes, request.threads)
        return ("rows", con.execute(request.sql).fetchdf())
    except (duckdb.OutOfMemoryException, MemoryError) as error:
        return ("memory", str(error).splitlines()[0] if str(error) else "out of memory")
    except duckdb.PermissionException as error:
        return ("refused", str(error))
    except duckdb.Error as error:
        message = str(error)
        if any(marker in message for marker in REFUSAL_MARKERS):
            return ("refused", message.splitlines()[0])
        if "bad allocation" in message or "bad_alloc" in message:
            return ("memory", message.splitlines()[0])
        return ("error", type(error).__name__, message)
    finally:
        con.close()
        snapshots.release(lease)


def _child(request_fd: int, reply_fd: int) -> None:
    """In a forked child: read the request, answer it, write ``pid`` then the reply."""
    with os.fdopen(reply_fd, "wb") as reply, os.fdopen(request_fd, "rb") as incoming:
        reply.write(struct.pack("<q", os.getpid()))
        reply.flush()
        try:
            answered = pickle.dumps(answer(pickle.load(incoming)), pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            answered = pickle.dumps(("memory", "the result does not fit in the memory limit"))
        except BaseException as error:  # noqa: BLE001 - the parent gets one line, not silence
            answered = pickle.dumps(("crash", f"{type(error).__name__}: {error}"))
        reply.write(answered)


def serve(control_fd: int) -> None:
    """Fork one child per request arriving on the control socket, until it closes.

    This process has loaded duckdb, pandas and the catalogue's reader (for the snapshot
    lease) but opened no database and started no thread, so forking it is safe and each query
    starts in milliseconds rather than seconds."""
    import ops.storage.results_store  # noqa: F401 - loaded once here, not in every child

    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(control, 1, 2)
        except OSError:
            return
        if not message or len(fds) != 2:
            return
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _child(*fds)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
