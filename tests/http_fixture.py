"""A threaded HTTP file server on 127.0.0.1 with Range support and injectable faults.

Every request is recorded (path, first byte asked for, status, body bytes sent), so tests can
check that a client resumed instead of starting over.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class DropAfter:
    """Announce the full body, send only ``n_bytes`` of it, then close the connection."""

    n_bytes: int


@dataclass(frozen=True)
class Stall:
    """Send ``n_bytes`` of the body, go silent for ``seconds``, then close the connection."""

    n_bytes: int
    seconds: float


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and no file body."""

    code: int


@dataclass(frozen=True)
class IgnoreRange:
    """Answer 200 with the whole file even when a Range was asked for."""


Fault = DropAfter | Stall | Status | IgnoreRange


@dataclass(frozen=True)
class RequestRecord:
    path: str
    range_start: int | None
    status: int
    bytes_sent: int


@dataclass
class _State:
    honour_range: bool
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output clean

    def _record(self, range_start: int | None, status: int, bytes_sent: int) -> None:
        state = self.server.state
        with state.lock:
            state.records.append(RequestRecord(self.path, range_start, status, bytes_sent))

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        state = self.server.state
        path = self.path.split("?", 1)[0]
        with state.lock:
            data = state.files.get(path)
            queue = state.faults.get(path)
            fault = queue.popleft() if queue else None
        match = _RANGE.match(self.headers.get("Range", "").strip())
        range_start = int(match.group(1)) if match else None

        if data is None:
            self._answer_empty(404, range_start)
            return
        if isinstance(fault, Status):
            self._answer_empty(fault.code, range_start)
            return

        use_range = (
            range_start is not None and state.honour_range and not isinstance(fault, IgnoreRange)
        )
        if use_range and range_start >= len(data):
            self._record(range_start, 416, 0)
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        first = range_start if use_range else 0
        last = len(data) - 1
        if use_range and match and match.group(2):
            last = min(int(match.group(2)), last)
        body = data[first : last + 1]
        status = 206 if use_range else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if state.honour_range else "none")
        if use_range:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.end_headers()
        if isinstance(fault, DropAfter | Stall):
            body = body[: fault.n_bytes]
            self.close_connection = True
        # Recorded before sending: a client that has read the whole body may check at once.
        self._record(range_start, status, len(body))
        try:
            self.wfile.write(body)
            self.wfile.flush()
            if isinstance(fault, Stall):
                time.sleep(fault.seconds)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up; nothing to clean up

    def _answer_empty(self, code: int, range_start: int | None) -> None:
        self._record(range_start, code, 0)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class FileServer:
    """Serve in-memory files; use as a context manager (binds a free port on 127.0.0.1)."""

    def __init__(self, honour_range: bool = True):
        self._state = _State(honour_range=honour_range)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def honour_range(self) -> bool:
        return self._state.honour_range

    @honour_range.setter
    def honour_range(self, value: bool) -> None:
        self._state.honour_range = value

    def start(self) -> FileServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.state = self._state
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, path: str) -> str:
        if self._server is None:
            raise RuntimeError("server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def add_file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (starting with '/'); returns its URL."""
        with self._state.lock:
            self._state.files[path] = data
        return self.url(path)

    def fail_next(self, path: str, *faults: Fault) -> None:
        """Apply ``faults`` to the next requests for ``path``, one per request, in order."""
        with self._state.lock:
            self._state.faults.setdefault(path, deque()).extend(faults)

    @property
    def records(self) -> list[RequestRecord]:
        with self._state.lock:
            return list(self._state.records)

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [record for record in self.records if record.path == path]

    def bytes_sent(self, path: str) -> int:
        return sum(record.bytes_sent for record in self.requests_for(path))
