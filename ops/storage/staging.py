"""Staging folders under ``<root>/.staging``, each owned by one live publish.

A publish writes its files here, where no SQL view looks, and then swaps them in. Ownership is
an ``flock`` on ``<folder>.lock``, held for the life of the publish; the kernel releases it when
the process ends, also by ``kill -9``. So a folder whose lock can be taken belongs to no
publish in progress, whatever its age, and the next publish deletes it. Creating and deleting
folders both happen under the area's own lock, so a new folder is never taken for stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ops.storage.paths import staging_dir

AREA_LOCK = ".lock"
LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)


def _remove_if_abandoned(area: Path, name: str) -> None:
    lock = area / f"{name}{LOCK_SUFFIX}"
    try:
        with _flock(lock, blocking=False):
            shutil.rmtree(area / name, ignore_errors=True)
            lock.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # its publish is still running


def remove_abandoned(root: Path) -> None:
    """Delete every staging folder whose publish is no longer running."""
    area = staging_dir(root)
    if not area.is_dir():
        return
    with _flock(area / AREA_LOCK):
        names = {p.name.removesuffix(LOCK_SUFFIX) for p in area.iterdir() if p.name != AREA_LOCK}
        for name in sorted(names):
            _remove_if_abandoned(area, name)


@contextlib.contextmanager
def staging_folder(root: Path, label: str) -> Iterator[Path]:
    """A fresh, empty folder under ``<root>/.staging``, removed with its contents on exit.

    Abandoned folders of earlier publishes are removed first.
    """
    remove_abandoned(root)
    area = staging_dir(root)
    area.mkdir(parents=True, exist_ok=True)
    name = f"{label}-{uuid.uuid4().hex[:12]}"
    folder = area / name
    lock = area / f"{name}{LOCK_SUFFIX}"
    with contextlib.ExitStack() as owned:
        with _flock(area / AREA_LOCK):
            owned.enter_context(_flock(lock))
            folder.mkdir()
        try:
            yield folder
        finally:
            # The folder goes before its lock: a folder without a lock reads as abandoned.
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
