"""Bad images, odd captions and broken structure, each through a small real run of the data
assets: a counted skip, or a clear error naming the file with nothing stored."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ops.data.coco import read_coco_captions
from ops.data.dataset_store import load_dataset_table
from ops.data.tables import DatasetFormatError
from ops.storage.parquet_io import read_features
from tests.hardening.custom_dataset import write_custom_dataset
from tests.pipeline_helpers import materialize, register_custom

DATA = ["raw_dataset", "images", "captions", "phrases"]


def _png_header_only(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose header claims ``width`` × ``height`` (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[16 : 20 + 9])  # width, height and the rest of the IHDR body
    ihdr = struct.pack(">II", width, height) + ihdr[8:]
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.error)


def test_bad_images_are_skipped_counted_and_listed(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    good = (folder / "img" / "im0.jpg").read_bytes()
    (folder / "img" / "im1.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (folder / "img" / "im2.jpg").write_bytes(b"")  # zero bytes
    (folder / "img" / "im3.jpg").write_text("this is not an image")
    (folder / "img" / "im4.jpg").unlink()  # listed but missing
    (folder / "img" / "im5.jpg").write_bytes(_png_header_only(60000, 60000))  # bomb
    # Keep one valid image per split so the run goes on.
    data = json.loads((folder / "data.json").read_text())
    for i, split in ((6, "val"), (7, "test"), (8, "train")):
        Image.new("RGB", (30, 30)).save(folder / "img" / f"ok{i}.jpg", "JPEG")
        data["images"].append(
            {
                "filename": f"ok{i}.jpg",
                "filepath": "img",
                "imgid": i,
                "split": split,
                "sentids": [100 + i],
                "sentences": [{"raw": "fine", "tokens": ["fine"], "imgid": i, "sentid": 100 + i}],
            }
        )
    (folder / "data.json").write_text(json.dumps(data))

    result = materialize(
        DATA, tmp_path / "data", dataset=register_custom(tmp_path / "data", folder)
    )
    assert result.success
    root = tmp_path / "data"
    rejects = load_dataset_table(root, "custom", "rejects").set_index("item_id")["reason"]
    assert rejects.to_dict() == {
        "im1": "truncated or corrupt image",
        "im2": "empty file",
        "im3": "not an image",
        "im4": "missing file",
        "im5": "too many pixels",
    }
    images = load_dataset_table(root, "custom", "images")
    assert sorted(images["image_id"]) == ["im0", "ok6", "ok7", "ok8"]
    captions = load_dataset_table(root, "custom", "captions")
    assert set(captions["image_id"]) == set(images["image_id"])
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "images"
    )
    assert metadata["rejected"].value == 5


def test_odd_captions_are_handled(tmp_path: Path) -> None:
    long_text = "a red box " + "with many words " * 400
    captions = {
        0: ["a red box", "   ", ""],
        1: ["a red box 🚗🔥 next to a 🐱"],
        2: ["一个红色的盒子 a red box"],
        3: ["a red box صندوق أحمر קופסה אדומה"],
        4: [long_text],
    }
    folder = write_custom_dataset(tmp_path / "custom", captions)
    root = tmp_path / "data"
    result = materialize(
        [*DATA, "word_vectors", "text_features"], root, dataset=register_custom(root, folder)
    )
    assert result.success
    stored = load_dataset_table(root, "custom", "captions")
    assert len(stored) == 6 + 0  # the two blank captions of im0 were dropped
    rejects = load_dataset_table(root, "custom", "rejects")
    assert (rejects["reason"] == "empty caption").sum() == 2
    by_image = stored.set_index("image_id")["text"]
    assert "🚗" in by_image["im1"] and "一个" in by_image["im2"] and "קופסה" in by_image["im3"]
    assert len(by_image["im4"]) == len(long_text.strip())
    ids, matrix = read_features(next((root / "features" / "custom").glob("text_*.parquet")))
    assert len(ids) == len(stored) and np.isfinite(matrix).all()


def _run_and_expect_failure(
    tmp_path: Path, folder: Path, *fragments: str, config: dict | None = None
) -> None:
    root = tmp_path / "data"
    custom = register_custom(root, folder)
    result = materialize(DATA, root, config, dataset=custom, raise_on_error=False)
    assert not result.success
    message = _failure_message(result)
    for fragment in fragments:
        assert fragment in message, message
    assert not (root / "tables" / "custom").exists()  # nothing stored


def _edit_json(folder: Path, edit) -> None:
    document = json.loads((folder / "data.json").read_text())
    edit(document)
    (folder / "data.json").write_text(json.dumps(document))


def test_duplicate_image_ids_are_an_error(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    _edit_json(folder, lambda d: d["images"][1].update(filename="im0.jpg"))
    _run_and_expect_failure(tmp_path, folder, "data.json", "im0")


def test_duplicate_caption_ids_are_an_error(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    _edit_json(folder, lambda d: d["images"][1]["sentences"][0].update(sentid=0))
    _run_and_expect_failure(tmp_path, folder, "data.json")


def test_a_missing_split_is_an_error(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    _edit_json(folder, lambda d: d["images"][3].update(split="train"))
    _run_and_expect_failure(tmp_path, folder, "data.json", "val")


def test_a_split_left_empty_by_bad_images_stores_nothing(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    for name in ("im4.jpg", "im5.jpg"):  # both test images
        (folder / "img" / name).write_bytes(b"")
    _run_and_expect_failure(tmp_path, folder, "data.json", "split 'test' kept 0 images")


def test_a_split_below_the_minimum_setting_stores_nothing(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    (folder / "img" / "im5.jpg").write_bytes(b"")  # one of the two test images
    minimum = {"raw_dataset": {"min_images_per_split": 2}}
    _run_and_expect_failure(tmp_path, folder, "split 'test' kept 1 images", config=minimum)


def test_malformed_karpathy_json_names_file_and_line(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    text = json.dumps(json.loads((folder / "data.json").read_text()), indent=1)
    (folder / "data.json").write_text(text.replace('"split"', '"split" "', 1))
    _run_and_expect_failure(tmp_path, folder, "data.json:")


def test_malformed_entities_xml_names_file_and_line(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom", entities=True)
    (folder / "Annotations" / "im2.xml").write_text("<annotation>\n<size>\n</annotation>\n")
    _run_and_expect_failure(tmp_path, folder, "im2.xml")


def test_unbalanced_entities_markup_names_file_and_line(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom", entities=True)
    (folder / "Sentences" / "im3.txt").write_text("[/EN#1/other a red box number 3\n")
    _run_and_expect_failure(tmp_path, folder, "im3.txt:1")


@pytest.mark.parametrize(
    "box, words",
    [((3, 4, 99, 22), "outside"), ((20, 4, 3, 22), "inverted")],
)
def test_bad_boxes_are_an_error(tmp_path: Path, box: tuple[int, ...], words: str) -> None:
    folder = write_custom_dataset(tmp_path / "custom", entities=True)
    xml = (folder / "Annotations" / "im1.xml").read_text()
    xml = xml.replace(
        "<xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>22</ymax>",
        "<xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>".format(*box),
    )
    (folder / "Annotations" / "im1.xml").write_text(xml)
    _run_and_expect_failure(tmp_path, folder, "im1.xml", words)


def test_malformed_coco_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "captions_val2014.json"
    path.write_text('{\n"images": [\n{"id": 1,,}\n]\n}\n')
    with pytest.raises(DatasetFormatError, match=r"captions_val2014.json:3"):
        read_coco_captions(path)


def test_coco_caption_of_unknown_image_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "captions.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                "annotations": [{"id": 5, "image_id": 2, "caption": "a cat"}],
            }
        )
    )
    with pytest.raises(DatasetFormatError, match="captions.json"):
        read_coco_captions(path)
