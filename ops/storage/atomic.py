"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A reader sees either the previous complete file or the new complete file, never a partial
one; a crash leaves at most a ``.tmp-*`` sibling, which the next write removes. Folders are
replaced as a whole by :func:`replace_directory`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class DiskFullError(OSError):
    """A write that ran out of space (or quota); the message names the file."""


def _is_disk_full(error: OSError) -> bool:
    # Arrow's writers report the C library's error in the text and may leave errno unset.
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


def _remove_stale_temporaries(target: Path) -> None:
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    On any exception the temporary file is removed and ``target`` is left untouched; a full
    disk is a :class:`DiskFullError` naming ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError) and _is_disk_full(error):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on the device while writing {target}; the previous file is "
                "kept: free space on its filesystem and run again",
            ) from error
        raise


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


# renameat2(2) flag and "relative to the working directory" descriptor, from <linux/fs.h> and
# <fcntl.h>.
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> ctypes._CFuncPtr | None:
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        path, fd = ctypes.c_char_p, ctypes.c_int
        renameat2.argtypes = [fd, path, fd, path, ctypes.c_uint]
    return renameat2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; False where the C library or filesystem cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    status = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def replace_directory(new: Path, target: Path, previous: Path) -> None:
    """Put the folder ``new`` at ``target``; the folder it replaces (if any) moves to ``previous``.

    Where Linux's ``renameat2(RENAME_EXCHANGE)`` works, ``target`` names the old folder or the
    new one at every instant, also after a crash at any point, because both names are swapped
    in one step. Elsewhere two renames are needed, and between them ``target`` is briefly absent.
    All three paths must be on one filesystem.
    """
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        os.rename(new, previous)
    else:
        os.rename(target, previous)
        os.rename(new, target)
