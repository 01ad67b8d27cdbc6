"""The data assets, run for real in process on small datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ops.cli import main
from ops.data.dataset_store import load_dataset_table
from tests.pipeline_helpers import materialize, register_custom

DATA = ["raw_dataset", "images", "captions", "phrases"]


def test_synthetic_dataset_goes_through_the_real_loaders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = materialize(DATA, tmp_path)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "split_counts_as_declared": True,
        "image_ids_unique": True,
        "captions_reference_images": True,
        "phrase_boxes_inside_images": True,
    }
    images = load_dataset_table(tmp_path, "synthetic", "images")
    assert images["split"].value_counts().to_dict() == {"train": 60, "val": 12, "test": 12}
    assert (images[["width", "height"]] == 64).all().all()
    captions = load_dataset_table(tmp_path, "synthetic", "captions")
    assert (captions.groupby("image_id").size() >= 5).all()
    phrases = load_dataset_table(tmp_path, "synthetic", "phrases")
    assert {"scene", "notvisual"} <= set(phrases["phrase_type"])
    assert phrases.loc[phrases["phrase_type"] == "notvisual", "gt_x1"].isna().all()

    assert (
        main(
            [
                "--data-root",
                str(tmp_path),
                "sql",
                "SELECT split, count(*) AS n FROM captions GROUP BY split ORDER BY split",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "split,n"
    assert lines[1:] == ["test,60", "train,300", "val,60"]


def _custom_dataset(folder: Path, bad: dict[str, bytes]) -> None:
    """A custom dataset of 6 images, some replaced by broken files."""
    (folder / "img").mkdir(parents=True)
    records = []
    for i in range(6):
        name = f"im{i}.jpg"
        Image.new("RGB", (32, 24), (40 * i, 10, 10)).save(folder / "img" / name, "JPEG")
        records.append(
            {
                "filename": name,
                "filepath": "img",
                "imgid": i,
                "split": ["train", "train", "train", "val", "test", "test"][i],
                "sentids": [i],
                "sentences": [
                    {"raw": f"picture {i}", "tokens": ["picture"], "imgid": i, "sentid": i}
                ],
            }
        )
    for name, payload in bad.items():
        (folder / "img" / name).write_bytes(payload)
    (folder / "data.json").write_text(json.dumps({"images": records}))


def test_a_failed_parse_leaves_the_previous_tables_intact(tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    _custom_dataset(folder, {})
    root = tmp_path / "data"
    custom = register_custom(root, folder)
    assert materialize(DATA, root, dataset=custom).success
    before = load_dataset_table(root, "custom", "captions")

    document = (folder / "data.json").read_text()
    (folder / "data.json").write_text(document[: len(document) // 2])
    result = materialize(DATA, root, dataset=custom, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "data.json" in str(failure.event_specific_data.error)
    after = load_dataset_table(root, "custom", "captions")
    pd.testing.assert_frame_equal(before, after)
    assert not list((root / "tables").glob(".custom.*"))
