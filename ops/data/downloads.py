"""Resumable, retried, verified file downloads (stdlib ``urllib`` only).

Bytes go to ``<dest>.part``; an interrupted transfer, in this run or a later one, continues
from the bytes already there with an HTTP ``Range`` request. Only a file whose size and SHA-256
match what was asked for is renamed onto ``dest``, so ``dest`` is either absent or verified.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ProgressCallback = Callable[[int, int | None], None]

USER_AGENT = "twobranch/0.1 (+urllib)"
MAX_BACKOFF_S = 60.0
_HASH_BLOCK = 1 << 20
# Statuses where waiting and asking again can help; every other 4xx is final.
_TRANSIENT_HTTP = frozenset({408, 425, 429})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download failed for a reason that retrying did not (or cannot) fix."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not match the expected size or SHA-256."""

    def __init__(self, url: str, path: Path, kind: str, expected: str, actual: str, attempts: int):
        self.url = url
        self.path = path
        self.kind = kind
        self.expected = expected
        self.actual = actual
        self.attempts = attempts
        super().__init__(
            f"{kind} mismatch downloading {url} to {path} after {attempts} attempt(s): "
            f"expected {expected}, got {actual}; the bad file was deleted"
        )


class _TransientFailure(Exception):
    """One attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, progressed: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed


def sha256_of(path: Path, block_bytes: int = _HASH_BLOCK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(path: Path, sha256: str | None, size: int | None) -> tuple[str, str, str] | None:
    """``(kind, expected, actual)`` for the first failed check, or None when ``path`` verifies."""
    if size is not None:
        actual_size = path.stat().st_size
        if actual_size != size:
            return "size", f"{size} bytes", f"{actual_size} bytes"
    if sha256 is not None:
        actual_digest = sha256_of(path)
        if actual_digest != sha256.lower():
            return "sha256", sha256.lower(), actual_digest
    return None


def _local_source(url: str) -> Path | None:
    """The filesystem path behind a ``file://`` URL or a plain path; None for network URLs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    # A one-letter scheme is a Windows drive, not a protocol.
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return Path(url)
    return None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first_byte, total)`` from a Content-Range header; None for parts that are absent."""
    if not value:
        return None, None
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _fetch_once(
    url: str,
    part: Path,
    size: int | None,
    timeout_s: float,
    chunk_bytes: int,
    progress: ProgressCallback | None,
) -> None:
    """Bring ``part`` to the end of the remote file, appending when the server resumes."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have >= size:
        return  # already as long as expected; verification decides whether it is right
    headers = {"User-Agent": USER_AGENT}
    if have > 0:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and have > 0:
            _, total = _parse_content_range(error.headers.get("Content-Range"))
            if total is None or total == have:
                return  # the partial file already holds every byte
            part.unlink(missing_ok=True)
            raise _TransientFailure(
                f"partial file ({have} bytes) is longer than the remote file ({total} bytes)"
            ) from None
        if error.code >= 500 or error.code in _TRANSIENT_HTTP:
            raise _TransientFailure(f"HTTP {error.code} {error.reason}") from None
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as err:
        raise _TransientFailure(f"{type(err).__name__}: {err}") from None

    with response:
        body_length = _content_length(response)
        if response.status == 206:
            first, total = _parse_content_range(response.headers.get("Content-Range"))
            if first != have:
                # Appending bytes from another offset would corrupt the file silently.
                part.unlink(missing_ok=True)
                raise _TransientFailure(f"server resumed at byte {first}, expected {have}")
            offset, mode = have, "ab"
        else:
            # A 200 answer to a Range request is the whole file: start over.
            total = body_length
            offset, mode = 0, "wb"
        if total is None:
            total = size
        received = 0
        try:
            with open(part, mode) as out:
                # read1 returns what has arrived; read(n) would wait for n bytes and lose
                # them all if the connection then stalls into a timeout.
                while block := response.read1(chunk_bytes):
                    out.write(block)
                    received += len(block)
                    if progress is not None:
                        progress(offset + received, total)
        except (ConnectionError, TimeoutError, http.client.HTTPException) as err:
            raise _TransientFailure(
                f"{type(err).__name__} after {received} bytes: {err}", progressed=received > 0
            ) from None
    if body_length is not None and received < body_length:
        raise _TransientFailure(
            f"connection closed after {received} of {body_length} bytes", progressed=received > 0
        )


def _fetch_with_retries(
    url: str,
    part: Path,
    size: int | None,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    chunk_bytes: int,
    progress: ProgressCallback | None,
) -> None:
    # Only attempts that received nothing count against ``retries``: a flaky link that keeps
    # delivering bytes eventually finishes a large file.
    failures = 0
    while True:
        try:
            _fetch_once(url, part, size, timeout_s, chunk_bytes, progress)
            return
        except _TransientFailure as failure:
            failures = 1 if failure.progressed else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"giving up on {url} after {failures} failed attempt(s) without progress: "
                    f"{failure.reason}; {part} is kept for resuming"
                ) from None
            time.sleep(min(backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S))


def _copy_local(
    source: Path, part: Path, chunk_bytes: int, progress: ProgressCallback | None
) -> None:
    if not source.is_file():
        raise DownloadError(f"{source}: no such file to copy")
    total = source.stat().st_size
    done = 0
    with open(source, "rb") as src, open(part, "wb") as out:
        while block := src.read(chunk_bytes):
            out.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
    shutil.copystat(source, part)


def _publish(part: Path, dest: Path) -> None:
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch ``url`` (http, https, file:// or a local path) to ``dest`` and verify it.

    Resumes ``<dest>.part`` with HTTP Range; retries connection errors, timeouts, 5xx and
    short reads with exponential backoff; on a size or SHA-256 mismatch deletes the partial
    file and starts over up to ``retries`` times, then raises :class:`ChecksumMismatch`.
    An existing ``dest`` that verifies is returned without touching the network.
    """
    dest = Path(dest)
    if dest.is_file() and _mismatch(dest, sha256, size) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    local = _local_source(url)
    attempts = 0
    while True:
        attempts += 1
        if local is not None:
            _copy_local(local, part, chunk_bytes, progress)
        else:
            _fetch_with_retries(
                url, part, size, retries, backoff_s, timeout_s, chunk_bytes, progress
            )
        mismatch = _mismatch(part, sha256, size)
        if mismatch is None:
            _publish(part, dest)
            return dest
        part.unlink(missing_ok=True)
        # Copying the same local file again cannot give different bytes.
        if local is not None or attempts > retries:
            kind, expected, actual = mismatch
            raise ChecksumMismatch(url, dest, kind, expected, actual, attempts)
        time.sleep(min(backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S))
