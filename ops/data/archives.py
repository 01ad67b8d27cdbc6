"""Safe unpacking of .zip and .tar(.gz/.bz2/.xz) archives.

Every member is checked before it is written: absolute paths, ``..`` components, links whose
target leaves the extraction folder, members reached through a link, and device or FIFO
entries are refused with :class:`UnsafeArchiveError`. Members are written into a hidden
staging folder; only a fully extracted archive is renamed into place, so a failure leaves the
target exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath
from typing import IO

_COPY_BLOCK = 1 << 20
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (".zip", *_TAR_SUFFIXES)


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target or is not a plain file/folder."""

    def __init__(self, archive: Path, member: str, reason: str):
        self.archive = archive
        self.member = member
        self.reason = reason
        super().__init__(f"{archive}: refusing member {member!r}: {reason}")


class ArchiveFormatError(ValueError):
    """The archive is corrupt, truncated or of an unsupported kind."""


def is_archive(path: Path) -> bool:
    """True when the file name has a suffix :func:`unpack_archive` understands."""
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    # Fall back to the content for files saved under another name.
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ArchiveFormatError(f"{archive}: not a zip or tar archive")


class _StagingWriter:
    """Writes validated members under ``root``; remembers the files it wrote."""

    def __init__(self, archive: Path, root: Path):
        self.archive = archive
        self.root = root
        self.real_root = os.path.realpath(root)
        self.written: list[str] = []

    def refuse(self, member: str, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(self.archive, member, reason)

    def _parts(self, member: str, name: str, what: str = "path") -> list[str]:
        if "\x00" in name:
            raise self.refuse(member, f"NUL byte in {what}")
        if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
            raise self.refuse(member, f"absolute {what} {name!r}")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise self.refuse(member, f"'..' component in {what} {name!r}")
        return parts

    def check_name(self, member: str) -> None:
        self._parts(member, member)

    def _path(self, member: str, parts: list[str]) -> Path:
        # A link written earlier could redirect everything below it; refuse to follow one.
        for depth in range(1, len(parts)):
            ancestor = self.root.joinpath(*parts[:depth])
            if ancestor.is_symlink():
                raise self.refuse(member, f"path passes through link {'/'.join(parts[:depth])!r}")
            if ancestor.exists() and not ancestor.is_dir():
                raise self.refuse(member, f"path passes through file {'/'.join(parts[:depth])!r}")
        path = self.root.joinpath(*parts)
        if path.is_dir() and not path.is_symlink():
            raise self.refuse(member, "a folder of the same name was already extracted")
        return path

    def _prepare_file_slot(self, member: str, parts: list[str]) -> Path:
        path = self._path(member, parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()  # a later member of the same name replaces the earlier one
        return path

    def _record(self, parts: list[str]) -> None:
        self.written.append("/".join(parts))

    def directory(self, member: str) -> None:
        parts = self._parts(member, member)
        if not parts:
            return
        for depth in range(1, len(parts) + 1):
            prefix = self.root.joinpath(*parts[:depth])
            if prefix.is_symlink():
                raise self.refuse(member, f"path passes through link {'/'.join(parts[:depth])!r}")
        self.root.joinpath(*parts).mkdir(parents=True, exist_ok=True)

    def regular(self, member: str, source: IO[bytes], mode: int, mtime: float | None) -> None:
        parts = self._parts(member, member)
        if not parts:
            raise self.refuse(member, "file member with an empty name")
        path = self._prepare_file_slot(member, parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            shutil.copyfileobj(source, out, _COPY_BLOCK)
        # Keep execute bits, drop setuid/setgid/sticky and group/other write.
        os.chmod(path, (mode & 0o755) | 0o600)
        if mtime is not None:
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(path, (mtime, mtime))
        self._record(parts)

    def symlink(self, member: str, link_target: str) -> None:
        parts = self._parts(member, member)
        if not parts:
            raise self.refuse(member, "link member with an empty name")
        if not link_target or "\x00" in link_target:
            raise self.refuse(member, "empty link target")
        if link_target.startswith(("/", "\\")) or PureWindowsPath(link_target).drive:
            raise self.refuse(member, f"link to absolute path {link_target!r}")
        resolved = posixpath.normpath("/".join([*parts[:-1], link_target]))
        if resolved == ".." or resolved.startswith("../"):
            raise self.refuse(member, f"link target {link_target!r} escapes the target folder")
        path = self._prepare_file_slot(member, parts)
        os.symlink(link_target, path)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self.real_root]) != self.real_root:
            raise self.refuse(member, f"link target {link_target!r} resolves outside the folder")
        self._record(parts)

    def hardlink(self, member: str, link_target: str) -> None:
        parts = self._parts(member, member)
        if not parts:
            raise self.refuse(member, "link member with an empty name")
        target_parts = self._parts(member, link_target, what="hard link target")
        if not target_parts:
            raise self.refuse(member, f"hard link to {link_target!r}")
        source = self._path(member, target_parts)
        if source.is_symlink() or not source.is_file():
            raise self.refuse(
                member, f"hard link target {link_target!r} is not a file extracted earlier"
            )
        path = self._prepare_file_slot(member, parts)
        try:
            os.link(source, path, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, path, follow_symlinks=False)
        self._record(parts)


def _tar_member_check(writer: _StagingWriter, member: tarfile.TarInfo) -> None:
    """The standard library's ``data`` filter as a second opinion on each member."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:
        return
    try:
        data_filter(member, str(writer.root))
    except tarfile.FilterError as error:
        raise writer.refuse(member.name, str(error)) from None


def _unpack_tar(archive: Path, writer: _StagingWriter) -> None:
    # Stream mode reads a compressed tar once instead of once to list and once to extract.
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            writer.check_name(member.name)
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise writer.refuse(member.name, "device, FIFO or other special file")
            if member.isdir():
                writer.directory(member.name)
                continue
            if member.issym():
                writer.symlink(member.name, member.linkname)
                _tar_member_check(writer, member)
                continue
            if member.islnk():
                writer.hardlink(member.name, member.linkname)
                _tar_member_check(writer, member)
                continue
            _tar_member_check(writer, member)
            source = tar.extractfile(member)
            if source is None:
                raise ArchiveFormatError(f"{archive}: cannot read member {member.name!r}")
            with source:
                writer.regular(member.name, source, member.mode, float(member.mtime))


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _unpack_zip(archive: Path, writer: _StagingWriter) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            unix_mode = info.external_attr >> 16
            if info.is_dir() or stat.S_ISDIR(unix_mode):
                writer.directory(info.filename)
            elif stat.S_ISLNK(unix_mode):
                link_target = bundle.read(info).decode("utf-8", errors="strict")
                writer.symlink(info.filename, link_target)
            elif unix_mode and not stat.S_ISREG(unix_mode) and stat.S_IFMT(unix_mode):
                raise writer.refuse(info.filename, "device, FIFO or other special file")
            else:
                with bundle.open(info) as source:
                    writer.regular(info.filename, source, unix_mode or 0o644, _zip_mtime(info))


def _remove_stale_staging(folder: Path, prefix: str) -> None:
    for stale in folder.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _replace_entries(staging: Path, target: Path) -> None:
    """Move each top-level staged entry into ``target``, replacing one of the same name."""
    for entry in sorted(staging.iterdir()):
        final = target / entry.name
        if final.exists() or final.is_symlink():
            graveyard = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=staging))
            os.replace(final, graveyard / entry.name)
        os.replace(entry, final)


def unpack_archive(archive: Path, target: Path) -> list[Path]:
    """Extract ``archive`` (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) into ``target``.

    Top-level entries that already exist in ``target`` are replaced; other contents stay.
    Returns the extracted files (and links) under ``target``. Raises
    :class:`UnsafeArchiveError` naming the archive and member for anything unsafe, and
    :class:`ArchiveFormatError` for a corrupt archive; in both cases ``target`` is unchanged.
    """
    archive = Path(archive)
    target = Path(target)
    kind = _archive_kind(archive)
    prefix = f".{target.name}.extract-"
    # Stage inside an existing target so the final renames never cross a filesystem boundary
    # (the target may be a mount point); beside it when the target is new.
    staging_parent = target if target.is_dir() else target.parent
    staging_parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(staging_parent, prefix)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=staging_parent))
    try:
        writer = _StagingWriter(archive, staging)
        try:
            if kind == "zip":
                _unpack_zip(archive, writer)
            else:
                _unpack_tar(archive, writer)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise ArchiveFormatError(f"{archive}: corrupt or truncated archive: {error}") from None
        if target.is_dir():
            _replace_entries(staging, target)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _final_paths(target, writer.written)


def _final_paths(target: Path, names: Iterable[str]) -> list[Path]:
    return [target.joinpath(*name.split("/")) for name in sorted(set(names))]
