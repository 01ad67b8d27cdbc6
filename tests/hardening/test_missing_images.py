"""A missing image says where it was looked for: its reject holds the path tried, and a split
emptied by missing images is an error that shows one such path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.data.acquire import acquire_custom, parse_raw_dataset
from ops.data.settings import DatasetSettings
from ops.data.tables import DatasetFormatError
from tests.hardening.custom_dataset import write_custom_dataset


def test_a_missing_image_is_rejected_with_the_path_tried_once(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    (folder / "img" / "im1.jpg").unlink()
    tables = parse_raw_dataset(acquire_custom(folder), DatasetSettings())
    rejects = tables.rejects[tables.rejects["stage"] == "images"]
    [row] = rejects.to_dict("records")
    tried = str(folder / "img" / "im1.jpg")
    assert row["item_id"] == "im1" and row["reason"] == "missing file" and row["path"] == tried
    assert sum(str(value).count(tried) for value in row.values()) == 1


def test_images_named_relative_to_the_wrong_folder_show_where_they_were_looked_for(
    tmp_path: Path,
) -> None:
    """The JSON names images without their subfolder: every one is missing, and the error
    shows the path tried, beside which the user sees the real place (``img/``)."""
    folder = write_custom_dataset(tmp_path / "custom")
    document = json.loads((folder / "data.json").read_text())
    for record in document["images"]:
        del record["filepath"]
    (folder / "data.json").write_text(json.dumps(document))
    with pytest.raises(DatasetFormatError) as caught:
        parse_raw_dataset(acquire_custom(folder), DatasetSettings())
    message = str(caught.value)
    train = next(r["filename"] for r in document["images"] if r["split"] == "train")
    assert "split 'train' kept 0 images" in message
    assert f"(missing file: 3, e.g. {folder / train})" in message
    assert message.count("e.g.") == 3  # one example for each emptied split, no more
