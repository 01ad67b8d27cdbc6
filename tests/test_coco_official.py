"""The ``coco_official`` source on small COCO-schema folders built here (and on the shared
COCO sample), and the five-captions-per-image rule of the Karpathy loading path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ops.data.acquire import acquire_custom, parse_raw_dataset
from ops.data.coco_official import acquire_coco_official
from ops.data.dataset_store import load_dataset_table
from ops.data.registry import add_dataset
from ops.data.settings import DatasetSettings
from ops.data.tables import DatasetFormatError
from tests.hardening.custom_dataset import write_custom_dataset
from tests.pipeline_helpers import materialize

BEYOND_FIVE = "beyond the first 5 captions of its image"

# image id -> annotation ids of its captions, in the order they appear in the file. Image 5
# has seven captions and 40 has six, written out of id order on purpose.
TRAIN = {11: [201, 202, 203, 204, 205], 5: [107, 101, 105, 103, 102, 106, 104], 23: [301, 302]}
TRAIN[23] += [303, 304, 305]
VAL = {
    40: [411, 406, 407, 408, 409, 410],
    31: [501, 502, 503, 504, 505],
    52: [601, 602, 603, 604, 605],
    37: [701, 702, 703, 704, 705],
    45: [801, 802, 803, 804, 805],
}


def _caption_file(
    subset: str, captions: dict[int, list[int]], reverse: bool = False
) -> dict[str, Any]:
    images = [
        {"id": image_id, "file_name": f"COCO_{subset}2014_{image_id:012d}.jpg"}
        | {"width": 8, "height": 6, "license": 1}
        for image_id in captions
    ]
    annotations = [
        {"image_id": image_id, "id": annotation_id, "caption": f"caption {annotation_id} "}
        for image_id, ids in captions.items()
        for annotation_id in ids
    ]
    if reverse:
        images.reverse()
        annotations.reverse()
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations}


def _coco_folder(folder: Path, reverse: bool = False) -> Path:
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for subset, captions in (("train", TRAIN), ("val", VAL)):
        document = _caption_file(subset, captions, reverse)
        (folder / "annotations" / f"captions_{subset}2014.json").write_text(json.dumps(document))
        (folder / f"{subset}2014").mkdir(exist_ok=True)
        for image in document["images"]:
            Image.new("RGB", (8, 6), (image["id"], 20, 90)).save(
                folder / f"{subset}2014" / image["file_name"], "JPEG"
            )
    return folder


def _splits(tables) -> dict[int, str]:
    return {int(k): v for k, v in tables.images.set_index("image_id")["split"].items()}


def test_default_split_five_captions_by_annotation_id(tmp_path: Path) -> None:
    folder = _coco_folder(tmp_path / "coco")
    raw = acquire_coco_official(folder, tmp_path / "data", "coco_small")
    assert raw.dataset == "coco_small" and raw.min_captions_per_image == 5
    assert raw.image_root == str(folder)
    assert Path(raw.karpathy_json).parent == tmp_path / "data" / "raw" / "coco_small"

    tables = parse_raw_dataset(raw, DatasetSettings())
    # Val ids sorted: 31 37 | 40 45 52 -> the first n // 2 = 2 are val, the rest test.
    assert _splits(tables) == {
        5: "train",
        11: "train",
        23: "train",
        31: "val",
        37: "val",
        40: "test",
        45: "test",
        52: "test",
    }
    assert tables.images["image_id"].tolist() == ["5", "11", "23", "31", "37", "40", "45", "52"]
    assert tables.images["width"].tolist() == [8] * 8
    per_image = tables.captions.groupby("image_id").size()
    assert set(per_image) == {5} and len(per_image) == 8

    by_image = tables.captions.groupby("image_id")["text"].apply(list)
    assert by_image["5"] == [f"caption {i}" for i in (101, 102, 103, 104, 105)]
    assert by_image["40"] == [f"caption {i}" for i in (406, 407, 408, 409, 410)]
    assert tables.captions.set_index("caption_id").loc["5#4", "split"] == "train"

    dropped = tables.rejects[tables.rejects["reason"] == BEYOND_FIVE]
    assert dropped["item_id"].tolist() == ["5#5", "5#6", "40#5"]
    assert set(dropped["stage"]) == {"captions"}
    assert len(tables.rejects) == 3
    # The converted file names what was dropped: the sixth and seventh annotation ids.
    converted = json.loads(Path(raw.karpathy_json).read_text())
    record = next(r for r in converted["images"] if r["cocoid"] == 5)
    assert [s["sentid"] for s in record["sentences"]][5:] == [106, 107]
    assert record["filepath"] == "train2014"


def test_default_split_ignores_file_order(tmp_path: Path) -> None:
    first = acquire_coco_official(_coco_folder(tmp_path / "coco"), tmp_path / "a", "c")
    # Same folder, records and captions written in reverse order.
    second = acquire_coco_official(
        _coco_folder(tmp_path / "coco", reverse=True), tmp_path / "b", "c"
    )
    assert Path(first.karpathy_json).read_text() == Path(second.karpathy_json).read_text()


def test_karpathy_split_file_decides_and_unlisted_images_are_counted(tmp_path: Path) -> None:
    folder = _coco_folder(tmp_path / "coco")
    listed = {
        5: "restval",
        11: "train",
        31: "test",
        37: "val",
        40: "val",
        45: "test",
        52: "restval",
    }
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(
        json.dumps(
            {
                "dataset": "coco",
                "images": [
                    {"cocoid": cocoid, "split": split, "filename": f"{cocoid}.jpg", "sentences": []}
                    for cocoid, split in listed.items()
                ],
            }
        )
    )
    raw = acquire_coco_official(folder, tmp_path / "data", "coco_k", karpathy_split=split_file)

    tables = parse_raw_dataset(raw, DatasetSettings())
    assert _splits(tables) == {
        5: "train",
        11: "train",
        31: "test",
        37: "val",
        40: "val",
        45: "test",
        52: "train",
    }
    left_out = tables.rejects[tables.rejects["stage"] == "images"]
    assert left_out[["item_id", "reason"]].values.tolist() == [
        ["23", "not listed in the Karpathy split file dataset_coco.json"]
    ]
    assert left_out["path"].tolist() == [str(folder / "annotations" / "captions_train2014.json")]
    assert set(tables.captions.groupby("image_id").size()) == {5}
    assert (tables.rejects["reason"] == BEYOND_FIVE).sum() == 3

    kept_restval = parse_raw_dataset(raw, DatasetSettings(restval_to_train=False))
    assert _splits(kept_restval)[5] == "restval" and _splits(kept_restval)[52] == "restval"


def test_missing_caption_files_or_image_folders_say_what_goes_where(tmp_path: Path) -> None:
    folder = tmp_path / "coco"
    (folder / "train2014").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="captions_train2014.json") as caught:
        acquire_coco_official(folder, tmp_path / "data", "c")
    assert caught.value.path == str(folder)
    assert f"{folder}/annotations/" in str(caught.value)

    _coco_folder(folder)
    (folder / "annotations" / "captions_val2014.json").rename(folder / "captions_val2014.json")
    for image in (folder / "val2014").iterdir():
        image.unlink()
    (folder / "val2014").rmdir()
    with pytest.raises(DatasetFormatError, match=r"image folder val2014/ is missing"):
        acquire_coco_official(folder, tmp_path / "data", "c")
    assert not (tmp_path / "data" / "raw" / "c").exists()


def test_shared_coco_sample_through_the_karpathy_path(tmp_path: Path, samples_dir: Path) -> None:
    sample_path = samples_dir / "coco" / "captions_sample.json"
    if not sample_path.is_file():
        pytest.skip(f"COCO caption sample not found at {sample_path}")
    sample = json.loads(sample_path.read_text())
    folder = tmp_path / "coco"
    (folder / "annotations").mkdir(parents=True)
    (folder / "annotations" / "captions_train2017.json").write_text(json.dumps(sample))
    for image in sample["images"]:
        (folder / "train2017").mkdir(exist_ok=True)
        Image.new("RGB", (image["width"], image["height"])).save(
            folder / "train2017" / image["file_name"], "JPEG"
        )
    val = {
        "images": [
            {"id": i, "file_name": f"{i:012d}.jpg", "width": 9, "height": 7} for i in (2, 1)
        ],
        "annotations": [
            {"id": 10 * i + k, "image_id": i, "caption": f"val {i} {k}"}
            for i in (1, 2)
            for k in range(5)
        ],
    }
    (folder / "annotations" / "captions_val2017.json").write_text(json.dumps(val))
    (folder / "val2017").mkdir()
    for image in val["images"]:
        Image.new("RGB", (9, 7)).save(folder / "val2017" / image["file_name"], "JPEG")

    tables = parse_raw_dataset(
        acquire_coco_official(folder, tmp_path / "data", "coco"), DatasetSettings()
    )
    assert _splits(tables) == {
        159269: "train",
        493652: "train",
        535506: "train",
        1: "val",
        2: "test",
    }
    images = tables.images.set_index("image_id")
    assert images.loc["493652", ["width", "height"]].tolist() == [640, 399]
    assert images.loc["159269", "path"] == str(folder / "train2017" / "000000159269.jpg")
    assert len(tables.captions) == 25 and tables.rejects.empty
    kitchen = tables.captions[tables.captions["image_id"] == "535506"]["text"].tolist()
    assert kitchen[:2] == [
        "She just finished chopping vegetables with the knife.",
        "A woman in a kitchen at the sink holding a knife.",
    ]
    expected = sorted(
        (a["id"], a["caption"].strip()) for a in sample["annotations"] if a["image_id"] == 493652
    )
    first = tables.captions[tables.captions["image_id"] == "493652"]["text"].tolist()
    assert first == [text for _, text in expected]


# --- five captions per image on an ordinary Karpathy file ---------------------------------------


def test_parse_raw_dataset_keeps_the_first_five_captions_by_sentid(tmp_path: Path) -> None:
    folder = write_custom_dataset(
        tmp_path / "custom",
        captions={0: [f"caption {n}" for n in range(7)], 1: ["a", "  ", "b", "c", "d", "e"]},
    )
    document = json.loads((folder / "data.json").read_text())
    # Image 0's sentids out of position order: the five lowest sit at positions 1 2 3 5 6.
    for sentence, sentid in zip(
        document["images"][0]["sentences"], [116, 110, 114, 111, 115, 112, 113], strict=True
    ):
        sentence["sentid"] = sentid
    (folder / "data.json").write_text(json.dumps(document))
    raw = acquire_custom(folder)

    tables = parse_raw_dataset(raw, DatasetSettings())
    first = tables.captions[tables.captions["image_id"] == "im0"]
    assert first["caption_index"].tolist() == [1, 2, 3, 5, 6]
    assert first["text"].tolist() == [
        "caption 1",
        "caption 2",
        "caption 3",
        "caption 5",
        "caption 6",
    ]
    # A blank caption does not count towards the five.
    assert tables.captions[tables.captions["image_id"] == "im1"]["text"].tolist() == list("abcde")
    assert tables.rejects[["stage", "item_id", "reason"]].values.tolist() == [
        ["captions", "im0#0", BEYOND_FIVE],
        ["captions", "im0#4", BEYOND_FIVE],
        ["captions", "im1#1", "empty caption"],
    ]

    everything = parse_raw_dataset(raw, DatasetSettings(), max_captions_per_image=None)
    assert (everything.captions["image_id"] == "im0").sum() == 7
    assert everything.rejects["reason"].tolist() == ["empty caption"]


def test_five_caption_limit_keeps_entities_phrases_aligned(tmp_path: Path) -> None:
    folder = write_custom_dataset(
        tmp_path / "custom", captions={2: [f"a red box {n}" for n in range(6)]}, entities=True
    )
    tables = parse_raw_dataset(acquire_custom(folder), DatasetSettings())
    phrases = tables.phrases[tables.phrases["image_id"] == "im2"]
    assert phrases["caption_id"].tolist() == [f"im2#{k}" for k in range(5)]
    assert tables.rejects["item_id"].tolist() == ["im2#5"]


def test_registered_coco_official_dataset_runs_through_the_data_assets(tmp_path: Path) -> None:
    root = tmp_path / "data"
    add_dataset(root, "coco2014", "coco_official", _coco_folder(tmp_path / "coco"))
    result = materialize(["raw_dataset", "images", "captions", "phrases"], root, dataset="coco2014")
    assert result.success
    captions = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["captions"]
    )
    assert captions["rows"].value == 40 and captions["captions_dropped_beyond_5"].value == 3
    assert captions["per_split"].value == {"test": 15, "train": 15, "val": 10}
    images = load_dataset_table(root, "coco2014", "images")
    assert set(images["dataset"]) == {"coco2014"}
