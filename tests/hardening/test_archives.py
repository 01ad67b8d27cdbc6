"""unpack_archive(): ordinary archives unpack; hostile ones are refused and change nothing."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from ops.data.archives import ArchiveFormatError, UnsafeArchiveError, is_archive, unpack_archive


def make_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members:
            bundle.writestr(zipfile.ZipInfo(name), data)
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def tar_link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` with its content (files) or link target."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = path.read_bytes()
            else:
                found[key] = "dir"
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """``tmp_path`` with an ``outside`` folder an attack would try to reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    return tmp_path


def test_zip_extracts_nested_files(tmp_path: Path):
    archive = make_zip(
        tmp_path / "caption_datasets.zip",
        [("dataset_flickr30k.json", b'{"images": []}'), ("sub/dir/", b""), ("sub/dir/a.txt", b"a")],
    )
    target = tmp_path / "out"

    files = unpack_archive(archive, target)

    assert files == [target / "dataset_flickr30k.json", target / "sub" / "dir" / "a.txt"]
    assert (target / "dataset_flickr30k.json").read_bytes() == b'{"images": []}'
    assert (target / "sub" / "dir" / "a.txt").read_bytes() == b"a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caption_datasets.zip", "out"]


def test_tar_gz_extracts_files_and_inside_links(tmp_path: Path):
    script, _ = tar_file("bin/run.sh", b"#!/bin/sh\n")
    script.mode = 0o4777  # setuid and world-writable are dropped, execute bits kept
    archive = make_tar(
        tmp_path / "images.tar.gz",
        [
            (script, b"#!/bin/sh\n"),
            tar_file("./flickr30k-images/1.jpg", b"jpeg-1"),
            tar_link("flickr30k-images/latest.jpg", "1.jpg", tarfile.SYMTYPE),
            tar_link("copy.jpg", "flickr30k-images/1.jpg", tarfile.LNKTYPE),
        ],
        mode="w:gz",
    )
    target = tmp_path / "out"

    files = unpack_archive(archive, target)

    assert sorted(str(p.relative_to(target)) for p in files) == [
        "bin/run.sh",
        "copy.jpg",
        "flickr30k-images/1.jpg",
        "flickr30k-images/latest.jpg",
    ]
    assert (target / "flickr30k-images" / "latest.jpg").read_bytes() == b"jpeg-1"
    assert (target / "copy.jpg").read_bytes() == b"jpeg-1"
    assert stat.S_IMODE((target / "bin" / "run.sh").stat().st_mode) == 0o755


def test_existing_target_keeps_other_entries_and_replaces_same_names(tmp_path: Path):
    target = tmp_path / "raw"
    (target / "downloads").mkdir(parents=True)
    (target / "downloads" / "keep.zip").write_bytes(b"keep")
    (target / "val2014").mkdir()
    (target / "val2014" / "old.jpg").write_bytes(b"old")
    archive = make_zip(tmp_path / "val2014.zip", [("val2014/new.jpg", b"new")])

    unpack_archive(archive, target)

    assert snapshot(target) == {
        "downloads": "dir",
        "downloads/keep.zip": b"keep",
        "val2014": "dir",
        "val2014/new.jpg": b"new",
    }


@pytest.mark.parametrize(
    ("member", "reason"),
    [("../evil", "'..'"), ("ok/../../evil", "'..'"), ("ABSOLUTE", "absolute path")],
)
def test_zip_path_escape_is_refused(workspace: Path, member: str, reason: str):
    if member == "ABSOLUTE":
        member = str(workspace / "outside" / "evil")
    archive = make_zip(workspace / "bad.zip", [("fine.txt", b"fine"), (member, b"evil")])
    target = workspace / "out"
    before = snapshot(workspace)

    with pytest.raises(UnsafeArchiveError, match=reason) as caught:
        unpack_archive(archive, target)

    assert caught.value.member == member and caught.value.archive == archive
    assert str(archive) in str(caught.value) and member in str(caught.value)
    assert not target.exists()
    assert snapshot(workspace) == before


def test_zip_symlink_escape_is_refused(workspace: Path):
    archive = workspace / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("etc")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "/etc")
    before = snapshot(workspace)

    with pytest.raises(UnsafeArchiveError, match="absolute"):
        unpack_archive(archive, workspace / "out")

    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([tar_file("../x", b"evil")], id="dotdot"),
        pytest.param([tar_file("/abs/x", b"evil")], id="absolute"),
        pytest.param([tar_link("etc", "/etc", tarfile.SYMTYPE)], id="symlink-absolute"),
        pytest.param([tar_link("up", "../..", tarfile.SYMTYPE)], id="symlink-dotdot"),
        pytest.param([tar_link("a/b/up", "../../../outside", tarfile.SYMTYPE)], id="symlink-deep"),
        pytest.param(
            [tar_link("secret", "../outside/secret", tarfile.LNKTYPE)], id="hardlink-dotdot"
        ),
        pytest.param([tar_link("passwd", "/etc/passwd", tarfile.LNKTYPE)], id="hardlink-absolute"),
        pytest.param(
            [tar_link("here", ".", tarfile.SYMTYPE), tar_link("here/up", "../x", tarfile.SYMTYPE)],
            id="through-inside-symlink",
        ),
        pytest.param(
            [tar_link("dir", ".", tarfile.SYMTYPE), tar_file("dir/file.txt", b"via link")],
            id="file-through-symlink",
        ),
        pytest.param([tar_link("null", "", tarfile.CHRTYPE)], id="char-device"),
        pytest.param([tar_link("fifo", "", tarfile.FIFOTYPE)], id="fifo"),
    ],
)
def test_tar_escape_is_refused_and_target_untouched(
    workspace: Path, members: list[tuple[tarfile.TarInfo, bytes]]
):
    archive = make_tar(workspace / "bad.tar", [tar_file("first.txt", b"ok"), *members])
    target = workspace / "out"
    before = snapshot(workspace)

    with pytest.raises(UnsafeArchiveError) as caught:
        unpack_archive(archive, target)

    assert caught.value.member == members[-1][0].name
    assert str(archive) in str(caught.value)
    assert not target.exists()
    assert snapshot(workspace) == before


def test_refused_archive_leaves_existing_target_unchanged(workspace: Path):
    target = workspace / "out"
    target.mkdir()
    (target / "kept.txt").write_bytes(b"previous run")
    archive = make_tar(
        workspace / "bad.tar.gz",
        [tar_file("kept.txt", b"replacement"), tar_link("up", "../..", tarfile.SYMTYPE)],
        mode="w:gz",
    )
    before = snapshot(workspace)

    with pytest.raises(UnsafeArchiveError):
        unpack_archive(archive, target)

    assert snapshot(workspace) == before


def test_corrupt_archive_is_a_format_error_and_changes_nothing(tmp_path: Path):
    noise = random.Random(0).randbytes(50_000)  # incompressible, so the cut lands mid-member
    good = make_tar(tmp_path / "good.tar.gz", [tar_file("a.txt", noise)], mode="w:gz")
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(good.read_bytes()[:20_000])

    with pytest.raises(ArchiveFormatError, match="truncated.tgz"):
        unpack_archive(truncated, tmp_path / "out")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tar.gz", "truncated.tgz"]


def test_archive_names_are_recognised():
    assert all(is_archive(Path(n)) for n in ["a.zip", "b.tar", "c.tar.gz", "d.TGZ", "e.tar.xz"])
    assert not any(is_archive(Path(n)) for n in ["train.txt", "dataset.json", "x.gz"])
