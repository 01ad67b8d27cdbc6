"""Image validation on tiny real files: good, broken, and bomb-like images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ops.data.image_check import check_image, validate_images
from ops.data.tables import REJECT_COLUMNS


def _write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    # Noise keeps the entropy-coded data long, so cutting the file surely loses pixels.
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def _write_png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose IHDR is rewritten to claim ``width`` x ``height``."""
    Image.new("RGB", (1, 1), (255, 0, 0)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    # Signature (8) + chunk length (4) + b"IHDR" (4), then width and height, then the rest of
    # the 13-byte IHDR body and its CRC over type + body.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture()
def image_folder(tmp_path: Path) -> dict[str, Path]:
    good = _write_jpeg(tmp_path / "good.jpg", 12, 7, seed=1)
    second = _write_jpeg(tmp_path / "second.jpg", 5, 9, seed=2)
    truncated = _write_jpeg(tmp_path / "truncated.jpg", 64, 64, seed=3)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is not a picture\n")
    bomb = _write_png_declaring(tmp_path / "bomb.png", 30_000, 30_000)
    return {
        "good": good,
        "second": second,
        "truncated": truncated,
        "empty": empty,
        "text": text,
        "missing": tmp_path / "missing.jpg",
        "bomb": bomb,
    }


def _frame(paths: dict[str, Path]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": "demo",
            "image_id": list(paths),
            "split": "train",
            "path": [str(path) for path in paths.values()],
            "width": pd.array([pd.NA] * len(paths), dtype="Int64"),
            "height": pd.array([pd.NA] * len(paths), dtype="Int64"),
            "note": [f"n{i}" for i in range(len(paths))],
        }
    )


def test_validate_images_splits_good_from_bad(image_folder: dict[str, Path]) -> None:
    valid, rejects = validate_images(_frame(image_folder), max_workers=3)

    assert valid["image_id"].tolist() == ["good", "second"]
    assert valid["width"].tolist() == [12, 5]
    assert valid["height"].tolist() == [7, 9]
    assert str(valid["width"].dtype) == "Int64"
    assert valid["note"].tolist() == ["n0", "n1"]  # other columns travel along

    assert list(rejects.columns) == list(REJECT_COLUMNS)
    expected = [
        ("truncated", "truncated or corrupt image"),
        ("empty", "empty file"),
        ("text", "not an image"),
        ("missing", "missing file"),
        ("bomb", "too many pixels"),
    ]
    assert list(zip(rejects["item_id"], rejects["reason"], strict=True)) == expected
    assert set(rejects["stage"]) == {"images"}
    assert set(rejects["dataset"]) == {"demo"}
    assert rejects["path"].tolist() == [str(image_folder[name]) for name, _ in expected]


def test_a_directory_is_not_a_file_rather_than_missing(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    assert check_image(tmp_path / "folder.jpg") == "not a file"
    assert check_image(tmp_path / "absent.jpg") == "missing file"
    _, rejects = validate_images(_frame({"dir": tmp_path / "folder.jpg"}))
    assert rejects["reason"].tolist() == ["not a file"]


def test_header_dimensions_are_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With Pillow's own guard switched off, the declared size alone must still reject it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    bomb = _write_png_declaring(tmp_path / "bomb.png", 40_000, 40_000)
    assert check_image(bomb) == "too many pixels"


def test_max_pixels_is_the_limit(tmp_path: Path) -> None:
    image = _write_jpeg(tmp_path / "small.jpg", 8, 5)
    assert check_image(image, max_pixels=40) == (8, 5)
    assert check_image(image, max_pixels=39) == "too many pixels"


def test_empty_input_gives_empty_outputs() -> None:
    valid, rejects = validate_images(_frame({}))
    assert valid.empty and rejects.empty
    assert list(rejects.columns) == list(REJECT_COLUMNS)


def test_many_images_keep_their_order(tmp_path: Path) -> None:
    paths = {}
    for index in range(20):
        if index % 3 == 0:
            paths[f"bad{index}"] = tmp_path / f"absent{index}.jpg"
        else:
            paths[f"ok{index}"] = _write_jpeg(tmp_path / f"{index}.jpg", 4 + index, 3, seed=index)
    valid, rejects = validate_images(_frame(paths), max_workers=4)
    assert valid["image_id"].tolist() == [name for name in paths if name.startswith("ok")]
    assert valid["width"].tolist() == [4 + int(name[2:]) for name in valid["image_id"]]
    assert rejects["item_id"].tolist() == [name for name in paths if name.startswith("bad")]
