"""A public dataset end to end from a local HTTP server: download, extract, manual images
folder, Karpathy JSON built from Entities, and the same loaders as every dataset."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ops.data.acquire import parse_raw_dataset
from ops.data.flickr30k_entities import parse_annotation_file
from ops.data.remote import acquire_public
from ops.data.settings import DatasetSettings
from ops.data.sources import (
    FLICKR30K_IMAGES_FOLDER,
    DatasetSource,
    ManualDownloadRequired,
    RemoteFile,
)
from tests.http_fixture import DropAfter, FileServer


def _annotations_zip(samples: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for sub in ("Annotations", "Sentences"):
            for path in sorted((samples / "flickr30k_entities" / sub).iterdir()):
                archive.write(path, f"{sub}/{path.name}")
    return buffer.getvalue()


def _source(server: FileServer, ids: list[str], archive: bytes) -> DatasetSource:
    files = [
        RemoteFile(server.add_file("/annotations.zip", archive), "annotations.zip", None, None)
    ]
    lists = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    for split, split_ids in lists.items():
        body = ("\n".join(split_ids) + "\n").encode()
        files.append(RemoteFile(server.add_file(f"/{split}.txt", body), f"{split}.txt", None, None))
    return DatasetSource(
        name="flickr30k_entities",
        files=files,
        manual="Put the Flickr30K images folder in place.",
        manual_folder=FLICKR30K_IMAGES_FOLDER,
    )


def test_flickr30k_entities_from_a_local_server(tmp_path: Path, samples_dir: Path) -> None:
    ids = sorted(p.stem for p in (samples_dir / "flickr30k_entities" / "Sentences").iterdir())
    images = tmp_path / "my-images"
    images.mkdir()
    for image_id in ids:
        size = parse_annotation_file(
            samples_dir / "flickr30k_entities" / "Annotations" / f"{image_id}.xml"
        )
        Image.new("RGB", (size.width, size.height), (90, 30, 30)).save(images / f"{image_id}.jpg")
    archive = _annotations_zip(samples_dir)
    root = tmp_path / "data"
    with FileServer() as server:
        source = _source(server, ids, archive)
        with pytest.raises(ManualDownloadRequired, match=FLICKR30K_IMAGES_FOLDER):
            acquire_public("flickr30k_entities", root, None, log=lambda _: None, source=source)
        server.fail_next("/annotations.zip", DropAfter(len(archive) // 3))
        raw = acquire_public(
            "flickr30k_entities", root, str(images), log=lambda _: None, source=source
        )
        served = server.bytes_sent("/annotations.zip")
    assert served < 1.5 * len(archive)  # resumed after the drop, not restarted
    tables = parse_raw_dataset(raw, DatasetSettings())
    assert sorted(tables.images["image_id"]) == ids
    assert tables.images.set_index("image_id")["split"].to_dict() == {
        ids[0]: "train",
        ids[1]: "train",
        ids[2]: "val",
        ids[3]: "test",
    }
    assert len(tables.captions) == 5 * len(ids)
    assert tables.rejects.empty
    bus = tables.phrases[tables.phrases["text"] == "a bus"]
    assert len(bus) >= 1
    assert set(bus["all_types"]) == {"vehicles/scene"}
