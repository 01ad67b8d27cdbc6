"""Immutable file sets for the SQL catalogue: one folder of hard links per catalogue version.

Why: DuckDB plans a query on a set of files (it reads their footers) and opens them again when
it runs. Tables are replaced by renaming a new file over the old path, so a query that
straddled a publish read the old footer against the new bytes ("Variable-length int over 10
bytes") or mixed two versions' row counts. Each catalogue therefore reads a *generation*:
``snapshots/<generation>/`` holds a hard link (a copy where the filesystem has none) to every
file the views read, under the same layout as the data root. A publish never changes a
generation; it builds a new one and renames the new catalogue into place, so a query keeps the
files it was planned on until it ends.

A retired generation is removed when both hold:

- no ``twobranch sql`` reader holds it: each reader takes a shared ``flock`` on
  ``<generation>.lease`` for the life of its query (a reader lease; the kernel drops it when the
  process ends, also by ``kill -9``), and removal needs the exclusive lock;
- it was retired at least :data:`RETIRED_GRACE_SECONDS` ago, which covers other DuckDB clients
  (``duckdb results.duckdb``) that take no lease.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ops.storage.paths import DERIVED_FOLDERS, snapshots_dir

# Other DuckDB clients take no lease: a retired generation stays this long for them.
RETIRED_GRACE_SECONDS = 600.0
LEASE_SUFFIX = ".lease"
RETIRED_SUFFIX = ".retired"
PUBLISH_LOCK = ".lock"
# A dataset folder swapped and deleted while it is being linked is linked again from the new one.
LINK_ATTEMPTS = 5
# Filesystems without hard links (some network shares): the generation copies its files.
NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def new_generation() -> str:
    """A fresh generation name; names sort by creation time."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def generation_dir(root: Path, generation: str) -> Path:
    return snapshots_dir(root) / generation


def _lease_file(root: Path, generation: str) -> Path:
    return snapshots_dir(root) / f"{generation}{LEASE_SUFFIX}"


def _link(name: str, source_dir_fd: int, target: Path) -> None:
    try:
        os.link(name, target, src_dir_fd=source_dir_fd)
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        source = os.open(name, os.O_RDONLY, dir_fd=source_dir_fd)
        with open(source, "rb") as reader, open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)


def _link_folder(source: Path, target: Path) -> bool:
    """Link every visible ``*.parquet`` of ``source`` into ``target``, all through one
    directory handle. False when the folder was swapped out or lost a file meanwhile (a
    swapped-out folder is being deleted); the caller then links the new one."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return True  # the dataset is gone (removed, or between the two renames of a swap)
    try:
        names = sorted(
            n for n in os.listdir(fd) if n.endswith(".parquet") and not n.startswith(".")
        )
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            _link(name, fd, target / name)
        # Still the folder at that path: it was in place for the whole listing and linking.
        return os.stat(source).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)


def _visible_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _link_dataset_folder(source: Path, target: Path) -> None:
    for _ in range(LINK_ATTEMPTS):
        shutil.rmtree(target, ignore_errors=True)
        if _link_folder(source, target):
            return
    raise RuntimeError(f"{source} kept changing while the catalogue was being built; try again")


def build_generation(root: Path, generation: str) -> Path:
    """Link every file a view reads into ``snapshots/<generation>/`` (same layout as the
    root): each ``tables/<dataset>/`` folder whole, each derived table and each run's result
    file."""
    target = generation_dir(root, generation)
    for top in ("tables", "results", *sorted(set(DERIVED_FOLDERS.values()))):
        for folder in _visible_folders(root / top):
            _link_dataset_folder(folder, target / top / folder.name)
    target.mkdir(parents=True, exist_ok=True)
    return target


@contextlib.contextmanager
def publishing(root: Path) -> Iterator[str]:
    """A new generation's name, with catalogue publishes serialized: inside the block the
    caller builds the generation and puts its catalogue in place, so on leaving it that
    generation is the current one, and the retired ones no reader holds are removed."""
    area = snapshots_dir(root)
    area.mkdir(parents=True, exist_ok=True)
    fd = os.open(area / PUBLISH_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        generation = new_generation()
        _lease_file(root, generation).touch()
        try:
            yield generation
        except BaseException:
            shutil.rmtree(generation_dir(root, generation), ignore_errors=True)
            _lease_file(root, generation).unlink(missing_ok=True)
            raise
        _remove_retired(root, generation)
    finally:
        os.close(fd)


def hold(root: Path, generation: str) -> int | None:
    """Take a reader lease on ``generation``: an open descriptor holding a shared lock, or
    None when the generation is already gone (the caller opens the newer catalogue)."""
    if not generation_dir(root, generation).is_dir():
        return None
    # Created if missing (a root copied without it): removal unlinks the folder first.
    fd = os.open(_lease_file(root, generation), os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    # Removed while this reader waited for the lock: the lease file is unlinked last.
    if os.fstat(fd).st_nlink == 0 or not generation_dir(root, generation).is_dir():
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _stamp_age(stamp: Path) -> float:
    if not stamp.exists():
        stamp.touch()
    return time.time() - stamp.stat().st_mtime


def _remove_retired(root: Path, current: str) -> list[str]:
    """Remove every generation but ``current`` that no reader holds and that was retired at
    least :data:`RETIRED_GRACE_SECONDS` ago; stamp the newly retired. Runs under the publish
    lock, so ``current`` is the catalogue's. Returns the generations removed."""
    area = snapshots_dir(root)
    removed = []
    for folder in _visible_folders(area):
        generation = folder.name
        if generation == current:
            continue
        stamp = area / f"{generation}{RETIRED_SUFFIX}"
        if _stamp_age(stamp) < RETIRED_GRACE_SECONDS:
            continue
        lease = _lease_file(root, generation)
        fd = os.open(lease, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a reader holds it
        try:
            shutil.rmtree(folder, ignore_errors=True)
            stamp.unlink(missing_ok=True)
            lease.unlink(missing_ok=True)  # last: a reader waiting on it then sees it gone
            removed.append(generation)
        finally:
            os.close(fd)
    return removed
