"""download() against a real local HTTP server, and acquire() with the source registry."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.data.downloads import ChecksumMismatch, DownloadError, download
from ops.data.sources import (
    FLICKR30K_IMAGES_FOLDER,
    SOURCES,
    DatasetSource,
    ManualDownloadRequired,
    RemoteFile,
    acquire,
    get_source,
)
from tests.http_fixture import DropAfter, FileServer, IgnoreRange, Stall, Status

FAST = {"backoff_s": 0.01, "timeout_s": 5.0}
PAYLOAD = bytes(range(256)) * 1200 + b"tail"  # 307,204 bytes, not a multiple of the chunk
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_full_download_is_verified_and_reports_progress(server: FileServer, tmp_path: Path):
    url = server.add_file("/data.bin", PAYLOAD)
    dest = tmp_path / "sub" / "data.bin"
    calls: list[tuple[int, int | None]] = []

    result = download(
        url,
        dest,
        sha256=PAYLOAD_SHA,
        size=len(PAYLOAD),
        chunk_bytes=65536,
        progress=lambda done, total: calls.append((done, total)),
        **FAST,
    )

    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert [r.status for r in server.requests_for("/data.bin")] == [200]
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    done_values = [done for done, _ in calls]
    assert all(a < b for a, b in zip(done_values, done_values[1:], strict=False))
    assert {total for _, total in calls} == {len(PAYLOAD)}


def test_dropped_connection_resumes_from_bytes_received(server: FileServer, tmp_path: Path):
    url = server.add_file("/big.bin", PAYLOAD)
    dropped_at = 100_003
    server.fail_next("/big.bin", DropAfter(dropped_at))
    dest = tmp_path / "big.bin"

    download(url, dest, sha256=PAYLOAD_SHA, chunk_bytes=8192, **FAST)

    assert dest.read_bytes() == PAYLOAD
    records = server.requests_for("/big.bin")
    assert [(r.status, r.range_start) for r in records] == [(200, None), (206, dropped_at)]
    assert records[0].bytes_sent == dropped_at
    assert server.bytes_sent("/big.bin") == len(PAYLOAD)


def test_stalled_connection_times_out_and_resumes(server: FileServer, tmp_path: Path):
    url = server.add_file("/slow.bin", PAYLOAD)
    server.fail_next("/slow.bin", Stall(70_000, seconds=2.0))
    dest = tmp_path / "slow.bin"

    download(url, dest, sha256=PAYLOAD_SHA, backoff_s=0.01, timeout_s=0.3)

    assert dest.read_bytes() == PAYLOAD
    starts = [r.range_start for r in server.requests_for("/slow.bin")]
    assert starts == [None, 70_000]


def test_repeated_drops_with_progress_do_not_exhaust_retries(server: FileServer, tmp_path: Path):
    url = server.add_file("/flaky.bin", PAYLOAD)
    server.fail_next("/flaky.bin", *[DropAfter(20_000)] * 6)
    dest = tmp_path / "flaky.bin"

    download(url, dest, sha256=PAYLOAD_SHA, retries=2, **FAST)

    assert dest.read_bytes() == PAYLOAD
    starts = [r.range_start for r in server.requests_for("/flaky.bin")]
    assert starts == [None, 20_000, 40_000, 60_000, 80_000, 100_000, 120_000]
    assert server.bytes_sent("/flaky.bin") == len(PAYLOAD)


def test_stale_part_from_previous_run_is_resumed(server: FileServer, tmp_path: Path):
    url = server.add_file("/resume.bin", PAYLOAD)
    dest = tmp_path / "resume.bin"
    part_of(dest).write_bytes(PAYLOAD[:123_456])

    download(url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), **FAST)

    assert dest.read_bytes() == PAYLOAD
    records = server.requests_for("/resume.bin")
    assert [(r.status, r.range_start) for r in records] == [(206, 123_456)]
    assert records[0].bytes_sent == len(PAYLOAD) - 123_456


def test_complete_part_gets_416_and_is_verified(server: FileServer, tmp_path: Path):
    url = server.add_file("/done.bin", PAYLOAD)
    dest = tmp_path / "done.bin"
    part_of(dest).write_bytes(PAYLOAD)

    download(url, dest, sha256=PAYLOAD_SHA, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert [(r.status, r.bytes_sent) for r in server.requests_for("/done.bin")] == [(416, 0)]


def test_corrupt_stale_part_is_discarded_and_refetched(server: FileServer, tmp_path: Path):
    url = server.add_file("/bad-part.bin", PAYLOAD)
    dest = tmp_path / "bad-part.bin"
    part_of(dest).write_bytes(b"\xff" * 1000)

    download(url, dest, sha256=PAYLOAD_SHA, **FAST)

    assert dest.read_bytes() == PAYLOAD
    starts = [r.range_start for r in server.requests_for("/bad-part.bin")]
    assert starts == [1000, None]


def test_checksum_mismatch_retries_then_raises_and_leaves_nothing(
    server: FileServer, tmp_path: Path
):
    url = server.add_file("/wrong.bin", b"not the bytes you want" * 100)
    dest = tmp_path / "wrong.bin"

    with pytest.raises(ChecksumMismatch) as caught:
        download(url, dest, sha256=PAYLOAD_SHA, retries=2, **FAST)

    message = str(caught.value)
    assert url in message and str(dest) in message
    assert PAYLOAD_SHA in message
    assert hashlib.sha256(b"not the bytes you want" * 100).hexdigest() in message
    assert caught.value.attempts == 3
    assert [r.range_start for r in server.requests_for("/wrong.bin")] == [None, None, None]
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_size_mismatch_is_reported_as_size(server: FileServer, tmp_path: Path):
    url = server.add_file("/short.bin", PAYLOAD[:1000])
    dest = tmp_path / "short.bin"

    with pytest.raises(ChecksumMismatch, match="size mismatch") as caught:
        download(url, dest, size=2000, retries=0, **FAST)

    assert caught.value.expected == "2000 bytes" and caught.value.actual == "1000 bytes"
    assert not dest.exists() and not part_of(dest).exists()


def test_server_errors_are_retried(server: FileServer, tmp_path: Path):
    url = server.add_file("/busy.bin", PAYLOAD)
    server.fail_next("/busy.bin", Status(503), Status(500))
    dest = tmp_path / "busy.bin"

    download(url, dest, sha256=PAYLOAD_SHA, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert [r.status for r in server.requests_for("/busy.bin")] == [503, 500, 200]


def test_persistent_server_error_gives_up_after_retries(server: FileServer, tmp_path: Path):
    url = server.add_file("/down.bin", PAYLOAD)
    server.fail_next("/down.bin", *[Status(502)] * 10)
    dest = tmp_path / "down.bin"

    with pytest.raises(DownloadError, match="HTTP 502"):
        download(url, dest, retries=3, **FAST)

    assert len(server.requests_for("/down.bin")) == 4
    assert not dest.exists()


def test_not_found_fails_at_once(server: FileServer, tmp_path: Path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("/missing.bin"), tmp_path / "missing.bin", **FAST)
    assert len(server.requests_for("/missing.bin")) == 1


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path):
    with FileServer(honour_range=False) as no_range:
        url = no_range.add_file("/plain.bin", PAYLOAD)
        no_range.fail_next("/plain.bin", DropAfter(50_000))
        dest = tmp_path / "plain.bin"

        download(url, dest, sha256=PAYLOAD_SHA, **FAST)

        records = no_range.requests_for("/plain.bin")
    assert dest.read_bytes() == PAYLOAD
    assert [(r.status, r.range_start) for r in records] == [(200, None), (200, 50_000)]


def test_single_range_refusal_overwrites_stale_part(server: FileServer, tmp_path: Path):
    url = server.add_file("/once.bin", PAYLOAD)
    server.fail_next("/once.bin", IgnoreRange())
    dest = tmp_path / "once.bin"
    part_of(dest).write_bytes(PAYLOAD[:5000])

    download(url, dest, sha256=PAYLOAD_SHA, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert [r.status for r in server.requests_for("/once.bin")] == [200]


def test_existing_verified_dest_makes_no_request(server: FileServer, tmp_path: Path):
    url = server.add_file("/have.bin", PAYLOAD)
    dest = tmp_path / "have.bin"
    dest.write_bytes(PAYLOAD)

    assert download(url, dest, sha256=PAYLOAD_SHA, size=len(PAYLOAD), **FAST) == dest
    assert server.records == []


def test_existing_dest_failing_verification_is_replaced(server: FileServer, tmp_path: Path):
    url = server.add_file("/stale.bin", PAYLOAD)
    dest = tmp_path / "stale.bin"
    dest.write_bytes(b"old version")

    download(url, dest, sha256=PAYLOAD_SHA, **FAST)

    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests_for("/stale.bin")) == 1


def test_file_url_and_local_path_are_copied_and_verified(tmp_path: Path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)

    from_url = download(source.as_uri(), tmp_path / "a.bin", sha256=PAYLOAD_SHA, **FAST)
    from_path = download(str(source), tmp_path / "b.bin", size=len(PAYLOAD), **FAST)

    assert from_url.read_bytes() == PAYLOAD and from_path.read_bytes() == PAYLOAD
    with pytest.raises(ChecksumMismatch):
        download(str(source), tmp_path / "c.bin", sha256="0" * 64, **FAST)
    assert not (tmp_path / "c.bin").exists() and not part_of(tmp_path / "c.bin").exists()


# --- acquire() and the registry ---------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def test_acquire_downloads_and_extracts_once(server: FileServer, tmp_path: Path):
    archive = zip_bytes({"dataset_tiny.json": b'{"images": []}', "Sentences/1.txt": b"a dog"})
    source = DatasetSource(
        name="tiny",
        files=[
            RemoteFile(
                url=server.add_file("/tiny.zip", archive),
                filename="tiny.zip",
                sha256=hashlib.sha256(archive).hexdigest(),
                size=len(archive),
                note="test archive",
            ),
            RemoteFile(
                url=server.add_file("/train.txt", b"1\n2\n"),
                filename="train.txt",
                sha256=None,
                size=None,
            ),
        ],
    )
    raw = tmp_path / "raw" / "tiny"

    assert acquire(source, raw) == raw

    assert (raw / "dataset_tiny.json").read_bytes() == b'{"images": []}'
    assert (raw / "Sentences" / "1.txt").read_bytes() == b"a dog"
    assert (raw / "train.txt").read_bytes() == b"1\n2\n"
    assert (raw / "downloads" / "tiny.zip").read_bytes() == archive
    served = len(server.records)

    (raw / "Sentences" / "1.txt").write_bytes(b"edited after extraction")
    acquire(source, raw)

    assert len(server.records) == served  # verified files: no network
    assert (raw / "Sentences" / "1.txt").read_bytes() == b"edited after extraction"


def test_manual_source_without_local_path_names_the_folder(tmp_path: Path):
    raw = tmp_path / "raw" / "flickr30k"

    with pytest.raises(ManualDownloadRequired) as caught:
        acquire(SOURCES["flickr30k"], raw)

    message = str(caught.value)
    assert "flickr30k-images" in message
    assert "31,783" in message
    assert str(raw / "flickr30k-images") in message
    assert not raw.exists()  # nothing downloaded before the manual check


def test_manual_source_with_missing_local_path_quotes_it(tmp_path: Path):
    missing = tmp_path / "nowhere" / "flickr30k-images"
    with pytest.raises(ManualDownloadRequired, match=re.escape(str(missing))):
        acquire(SOURCES["flickr30k"], tmp_path / "raw", local_path=missing)


def manual_source(server: FileServer) -> DatasetSource:
    captions = zip_bytes({"dataset_flickr30k.json": b"{}"})
    return DatasetSource(
        name="manual",
        files=[RemoteFile(server.add_file("/captions.zip", captions), "captions.zip", None, None)],
        manual="Put the images folder in place.",
        manual_folder=FLICKR30K_IMAGES_FOLDER,
    )


def test_manual_local_folder_is_linked_into_raw_dir(server: FileServer, tmp_path: Path):
    images = tmp_path / "elsewhere" / "my-images"
    images.mkdir(parents=True)
    (images / "1000092795.jpg").write_bytes(b"\xff\xd8jpeg")
    raw = tmp_path / "raw"

    acquire(manual_source(server), raw, local_path=images)

    linked = raw / FLICKR30K_IMAGES_FOLDER
    assert linked.is_symlink() and linked.resolve() == images.resolve()
    assert (linked / "1000092795.jpg").read_bytes() == b"\xff\xd8jpeg"
    assert (raw / "dataset_flickr30k.json").read_bytes() == b"{}"
    # Once in place, the folder no longer needs local_path.
    acquire(manual_source(server), raw)


def test_manual_local_archive_is_extracted(server: FileServer, tmp_path: Path):
    tarball = tmp_path / "flickr30k-images.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("flickr30k-images/36979.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"jpeg"))
    raw = tmp_path / "raw"

    acquire(manual_source(server), raw, local_path=tarball)

    assert (raw / FLICKR30K_IMAGES_FOLDER / "36979.jpg").read_bytes() == b"jpeg"


def test_manual_archive_without_expected_folder_is_explained(server: FileServer, tmp_path: Path):
    tarball = tmp_path / "wrong.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("images/1.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))

    with pytest.raises(ManualDownloadRequired, match="did not contain a top-level folder"):
        acquire(manual_source(server), tmp_path / "raw", local_path=tarball)


def test_registry_entries_are_well_formed():
    for name, source in SOURCES.items():
        assert get_source(name) is source and source.name == name
        for remote in source.files:
            assert re.match(r"https?://", remote.url)
            assert remote.url.rsplit("/", 1)[1] == remote.filename
            assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
            if remote.sha256 is None:
                assert "No SHA-256" in remote.note
    coco_files = {f.filename for f in SOURCES["coco"].files}
    assert {"train2014.zip", "val2014.zip", "annotations_trainval2014.zip"} <= coco_files
    assert "caption_datasets.zip" in coco_files
    entity_files = {f.filename for f in SOURCES["flickr30k_entities"].files}
    assert entity_files == {"annotations.zip", "train.txt", "val.txt", "test.txt"}
    with pytest.raises(KeyError, match="known"):
        get_source("imagenet")
