"""Dataset loaders on real-format samples and on small files built here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ops.data.acquire import acquire_custom, parse_raw_dataset
from ops.data.coco import read_coco_captions
from ops.data.flickr30k_entities import (
    load_entities_phrases,
    parse_annotation_file,
    parse_sentence_file,
)
from ops.data.karpathy import load_karpathy
from ops.data.settings import DatasetSettings
from ops.data.tables import CAPTION_COLUMNS, IMAGE_COLUMNS, PHRASE_COLUMNS, DatasetFormatError
from tests.hardening.custom_dataset import write_custom_dataset

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"
ENTITIES = SAMPLES / "flickr30k_entities"
COCO_SAMPLE = SAMPLES / "coco" / "captions_sample.json"
ENTITY_IMAGES = ["100197432", "100759042", "5812770731", "7247604030"]

needs_entities = pytest.mark.skipif(
    not ENTITIES.is_dir(), reason="Flickr30K Entities samples (../shared/samples) are absent"
)
needs_coco = pytest.mark.skipif(
    not COCO_SAMPLE.is_file(), reason="COCO caption sample (../shared/samples) is absent"
)


def _sentence(raw: str, sentid: int, imgid: int) -> dict[str, Any]:
    return {"raw": raw, "tokens": raw.lower().split(), "imgid": imgid, "sentid": sentid}


def _write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path


def _flickr_record(filename: str, split: str, raws: list[str], first_sentid: int) -> dict:
    return {
        "filename": filename,
        "imgid": first_sentid,
        "split": split,
        "sentids": list(range(first_sentid, first_sentid + len(raws))),
        "sentences": [_sentence(raw, first_sentid + k, first_sentid) for k, raw in enumerate(raws)],
    }


# --- Flickr30K Entities: real samples -------------------------------------------------------


@needs_entities
def test_every_sample_sentence_file_has_five_sentences() -> None:
    for image_id in ENTITY_IMAGES:
        sentences = parse_sentence_file(ENTITIES / "Sentences" / f"{image_id}.txt")
        assert len(sentences) == 5, image_id
        assert all("[" not in s.text and "/EN#" not in s.text for s in sentences)


@needs_entities
def test_sentence_markup_is_parsed() -> None:
    first = parse_sentence_file(ENTITIES / "Sentences" / "100197432.txt")[0]
    assert first.text == "Some women are standing in front of a bus with buildings behind it ."
    summary = [(p.chain_id, p.types, p.text, p.first_word_index) for p in first.phrases]
    assert summary == [
        ("114", ["people"], "Some women", 0),
        ("115", ["vehicles", "scene"], "a bus", 7),
        ("116", ["scene"], "buildings", 10),
        ("0", ["notvisual"], "it", 12),
    ]
    words = first.text.split()
    bus = first.phrases[1]
    assert words[bus.first_word_index : bus.first_word_index + 2] == ["a", "bus"]

    plain = parse_sentence_file(ENTITIES / "Sentences" / "100759042.txt")[4]
    assert plain.text == "You know i am looking like Justin Bieber ."
    assert plain.phrases == []

    # Two phrases side by side: "[/EN#267501/other The] [/EN#267494/bodyparts back of ...]".
    adjacent = parse_sentence_file(ENTITIES / "Sentences" / "7247604030.txt")[2]
    assert [(p.chain_id, p.text, p.first_word_index) for p in adjacent.phrases[:2]] == [
        ("267501", "The", 0),
        ("267494", "back of a person 's head", 1),
    ]


@needs_entities
def test_annotation_boxes_are_converted_to_zero_based_exclusive() -> None:
    annotation = parse_annotation_file(ENTITIES / "Annotations" / "100197432.xml")
    assert (annotation.width, annotation.height) == (500, 332)
    # <xmin>3</xmin><ymin>115</ymin><xmax>500</xmax><ymax>330</ymax>
    assert annotation.boxes["114"] == [(2, 114, 500, 330)]
    assert annotation.boxes["116"] == [(0, 0, 500, 249)]
    assert annotation.nobndbox == {"117", "118"}
    assert annotation.scene == set()
    assert "0" not in annotation.boxes


@needs_entities
def test_annotation_shared_boxes_and_flags() -> None:
    annotation = parse_annotation_file(ENTITIES / "Annotations" / "5812770731.xml")
    # The first two <object>s each list two chains; 243348 appears in both.
    assert annotation.boxes["243345"] == [(56, 124, 390, 298)]
    assert annotation.boxes["243348"] == [(56, 124, 390, 298), (197, 53, 336, 221)]
    assert annotation.boxes["243349"] == [(197, 53, 336, 221)]
    assert annotation.boxes["243350"] == [(195, 96, 285, 189), (216, 101, 287, 188)]
    assert annotation.nobndbox == {"243353", "243355", "243356"}
    assert annotation.scene == {"243352"}

    both = parse_annotation_file(ENTITIES / "Annotations" / "7247604030.xml")
    assert both.scene == {"267502"} and both.nobndbox == {"267502"}
    assert both.boxes["267501"] == [(0, 251, 324, 334)]  # reaches the bottom edge (334)


def _captions_for(image_ids: list[str], per_image: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": "entities",
            "caption_id": [f"{i}#{k}" for i in image_ids for k in range(per_image)],
            "image_id": [i for i in image_ids for _ in range(per_image)],
            "split": "test",
            "caption_index": [k for _ in image_ids for k in range(per_image)],
            "text": "unused",
        }
    )


@needs_entities
def test_load_entities_phrases_from_samples() -> None:
    phrases = load_entities_phrases(ENTITIES, _captions_for(ENTITY_IMAGES), "entities")
    assert list(phrases.columns) == list(PHRASE_COLUMNS)
    expected_counts = {}
    for image_id in ENTITY_IMAGES:
        sentences = parse_sentence_file(ENTITIES / "Sentences" / f"{image_id}.txt")
        expected_counts[image_id] = sum(len(s.phrases) for s in sentences)
    assert phrases.groupby("image_id").size().to_dict() == expected_counts
    assert phrases["phrase_id"].is_unique

    rows = phrases.set_index("phrase_id")
    bus = rows.loc["100197432#0:1"]
    assert (bus["text"], bus["phrase_type"], bus["all_types"], bus["chain_id"]) == (
        "a bus",
        "vehicles",
        "vehicles/scene",
        "115",
    )
    assert (bus["gt_x1"], bus["gt_y1"], bus["gt_x2"], bus["gt_y2"]) == (248, 201, 392, 290)
    assert bus["split"] == "test" and bus["caption_id"] == "100197432#0"

    girls = rows.loc["5812770731#1:0"]  # chain 243348: union of its two boxes
    assert girls["text"] == "Two girls" and girls["n_boxes"] == 2
    assert (girls["gt_x1"], girls["gt_y1"], girls["gt_x2"], girls["gt_y2"]) == (56, 53, 390, 298)

    she = rows.loc["5812770731#1:4"]
    assert she["phrase_type"] == "notvisual" and she["chain_id"] == "0"
    assert she["n_boxes"] == 0 and math.isnan(she["gt_x1"])
    assert rows.loc["100197432#1:1", "text"] == "a city street"  # nobndbox chain 118
    assert math.isnan(rows.loc["100197432#1:1", "gt_x2"])


@needs_entities
def test_entities_image_sizes() -> None:
    sizes = [
        [image_id, annotation.width, annotation.height]
        for image_id in ENTITY_IMAGES
        for annotation in [parse_annotation_file(ENTITIES / "Annotations" / f"{image_id}.xml")]
    ]
    assert sizes == [
        ["100197432", 500, 332],
        ["100759042", 355, 500],
        ["5812770731", 500, 333],
        ["7247604030", 500, 334],
    ]


# --- Flickr30K Entities: error cases on built files -------------------------------------------

ANNOTATION = """<annotation>
\t<size><width>100</width><height>80</height><depth>3</depth></size>
\t<object>
\t\t<name>7</name>
\t\t<bndbox><xmin>{xmin}</xmin><ymin>1</ymin><xmax>{xmax}</xmax><ymax>80</ymax></bndbox>
\t</object>
</annotation>
"""


def _entities_folder(root: Path, image_id: str, sentences: str, **box: int) -> Path:
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Sentences" / f"{image_id}.txt").write_text(sentences)
    xml = ANNOTATION.format(xmin=box.get("xmin", 1), xmax=box.get("xmax", 100))
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    return root


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[/EN#7/people a dog runs", "never closed"),
        ("a dog] runs", "never opened"),
        ("[/EN#7/people a [/EN#8/other dog] ]", "inside another phrase"),
        ("[/EN#x/people a dog]", "malformed phrase markup"),
        ("[/EN#7/people ] dog", "empty phrase"),
    ],
)
def test_bad_markup_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "1.txt"
    path.write_text(f"[/EN#7/people A dog] runs .\n{line}\n")
    with pytest.raises(DatasetFormatError, match=message) as caught:
        parse_sentence_file(path)
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{path}:2: ")


def test_malformed_xml_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "1.xml"
    path.write_text("<annotation>\n<size><width>10</width>\n<height>5</height></sze>\n")
    with pytest.raises(DatasetFormatError, match="malformed XML") as caught:
        parse_annotation_file(path)
    assert caught.value.line == 3 and caught.value.path == str(path)


def test_inverted_box_names_file_and_object(tmp_path: Path) -> None:
    root = _entities_folder(tmp_path, "1", "x\n", xmin=60, xmax=20)
    with pytest.raises(DatasetFormatError, match=r"object 1 \(chains 7\): inverted box") as caught:
        parse_annotation_file(root / "Annotations" / "1.xml")
    assert caught.value.path.endswith("1.xml") and caught.value.line == 5


def test_box_outside_image_is_an_error(tmp_path: Path) -> None:
    root = _entities_folder(tmp_path, "1", "x\n", xmax=101)
    with pytest.raises(DatasetFormatError, match="outside the 100x80 image"):
        parse_annotation_file(root / "Annotations" / "1.xml")


def test_phrases_follow_caption_index_past_blank_lines(tmp_path: Path) -> None:
    root = _entities_folder(
        tmp_path,
        "1",
        "[/EN#7/animals A dog] runs .\n\n[/EN#0/notvisual It] is [/EN#7/animals brown]\n",
    )
    captions = pd.DataFrame(
        {
            "dataset": "d",
            "caption_id": ["1#0", "1#2"],
            "image_id": ["1", "1"],
            "split": "train",
            "caption_index": [0, 2],
            "text": ["A dog runs .", "It is brown"],
        }
    )
    phrases = load_entities_phrases(root, captions, "d")
    assert phrases["phrase_id"].tolist() == ["1#0:0", "1#2:0", "1#2:1"]
    assert phrases["text"].tolist() == ["A dog", "It", "brown"]
    assert phrases["first_word_index"].tolist() == [0, 0, 2]
    assert phrases.loc[2, ["gt_x1", "gt_y1", "gt_x2", "gt_y2"]].tolist() == [0, 0, 100, 80]


def test_phrases_need_matching_sentence_files(tmp_path: Path) -> None:
    root = _entities_folder(tmp_path, "1", "A dog .\nA cat .\n")
    captions = _captions_for(["1"], per_image=3)
    with pytest.raises(DatasetFormatError, match="2 sentences but image 1 has 3 captions"):
        load_entities_phrases(root, captions, "d")
    with pytest.raises(DatasetFormatError, match="no sentence file for image 2") as caught:
        load_entities_phrases(root, _captions_for(["2"], per_image=2), "d")
    assert caught.value.path.endswith("Sentences/2.txt")


# --- Karpathy split files -----------------------------------------------------------------------


def test_karpathy_flickr_style(tmp_path: Path) -> None:
    document = {
        "images": [
            _flickr_record("1000092795.jpg", "train", ["Two young guys .", " A dog  "], 0),
            _flickr_record("10002456.jpg", "restval", ["A man .", "   "], 2),
            _flickr_record("1001773457.jpg", "test", ["A cat ."], 4),
        ],
        "dataset": "flickr30k",
    }
    path = _write_json(tmp_path / "dataset_flickr30k.json", document)
    tables = load_karpathy(path, tmp_path / "images", "flickr30k")

    assert tables.images["image_id"].tolist() == ["1000092795", "10002456", "1001773457"]
    assert tables.images["split"].tolist() == ["train", "train", "test"]
    assert tables.images["path"].tolist() == [
        str(tmp_path / "images" / name)
        for name in ("1000092795.jpg", "10002456.jpg", "1001773457.jpg")
    ]
    assert tables.images["width"].isna().all() and tables.images["height"].isna().all()
    assert list(tables.images.columns) == list(IMAGE_COLUMNS)
    assert list(tables.captions.columns) == list(CAPTION_COLUMNS)

    captions = tables.captions
    assert captions["caption_id"].tolist() == [
        "1000092795#0",
        "1000092795#1",
        "10002456#0",
        "1001773457#0",
    ]
    assert captions["text"].tolist() == ["Two young guys .", "A dog", "A man .", "A cat ."]
    assert captions["caption_index"].tolist() == [0, 1, 0, 0]
    assert captions["split"].tolist() == ["train", "train", "train", "test"]
    assert tables.rejects[["stage", "item_id", "reason"]].values.tolist() == [
        ["captions", "10002456#1", "empty caption"]
    ]
    assert tables.rejects["path"].tolist() == [str(path)]


def test_karpathy_coco_style_keeps_restval(tmp_path: Path) -> None:
    records = []
    for index, (cocoid, split) in enumerate([(391895, "val"), (522418, "restval")]):
        record = _flickr_record(
            f"COCO_{split}2014_{cocoid:012d}.jpg", split, ["A b .", "C d ."], 2 * index
        )
        record["filepath"] = "val2014"
        record["cocoid"] = cocoid
        records.append(record)
    path = _write_json(tmp_path / "dataset_coco.json", {"images": records, "dataset": "coco"})
    tables = load_karpathy(path, tmp_path, "coco", restval_to_train=False)

    assert tables.images["image_id"].tolist() == ["391895", "522418"]
    assert tables.images["split"].tolist() == ["val", "restval"]
    assert tables.images["path"].iloc[1] == str(
        tmp_path / "val2014" / "COCO_restval2014_000000522418.jpg"
    )
    assert tables.captions["caption_id"].tolist() == [
        "391895#0",
        "391895#1",
        "522418#0",
        "522418#1",
    ]
    assert tables.captions["split"].tolist() == ["val", "val", "restval", "restval"]


def test_karpathy_drops_images_left_without_captions(tmp_path: Path) -> None:
    document = {
        "images": [
            _flickr_record("1.jpg", "train", [""], 0),
            _flickr_record("2.jpg", "val", ["x"], 1),
        ]
    }
    tables = load_karpathy(_write_json(tmp_path / "d.json", document), tmp_path, "d")
    assert tables.images["image_id"].tolist() == ["2"]
    assert tables.rejects[["item_id", "reason"]].values.tolist() == [
        ["1#0", "empty caption"],
        ["1", "image has no captions"],
    ]


def test_karpathy_malformed_json_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(
        '{"images": [\n  {"filename": "1.jpg",\n   "split": "train" "sentences": []}\n]}\n'
    )
    with pytest.raises(DatasetFormatError, match="invalid JSON") as caught:
        load_karpathy(path, tmp_path, "flickr30k")
    assert caught.value.line == 3 and caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [_flickr_record("1.jpg", "train", ["a"], 0), _flickr_record("1.png", "val", ["b"], 1)],
            r"record 1 \('1.png'\): duplicate image id '1' \(first in record 0\)",
        ),
        (
            [_flickr_record("1.jpg", "train", ["a"], 0), _flickr_record("2.jpg", "val", ["b"], 0)],
            r"record 1 \('2.jpg'\) sentence 0: duplicate caption sentid 0",
        ),
        ([_flickr_record("1.jpg", "dev", ["a"], 0)], r"record 0 \('1.jpg'\): unknown split 'dev'"),
        ([{"filename": "1.jpg", "sentences": []}], r"record 0 \('1.jpg'\): missing key 'split'"),
        ([{"split": "train", "sentences": []}], r"record 0: missing key 'filename'"),
        ([_flickr_record("../1.jpg", "train", ["a"], 0)], "is not relative"),
        (
            [
                _flickr_record("1.jpg", "train", ["a"], 0),
                _flickr_record("2.jpg", "val", ["b", "c"], 1) | {"imgid": 7},
            ],
            r"record 1 \('2.jpg'\) sentence 0: imgid 1 contradicts its image record's imgid 7",
        ),
    ],
)
def test_karpathy_structural_errors_name_the_record(
    tmp_path: Path, records: list[dict], message: str
) -> None:
    path = _write_json(tmp_path / "d.json", {"images": records})
    with pytest.raises(DatasetFormatError, match=message) as caught:
        load_karpathy(path, tmp_path, "d")
    assert caught.value.path == str(path)


# --- COCO caption files ------------------------------------------------------------------------


@needs_coco
def test_coco_sample_keeps_file_order_and_annotation_order() -> None:
    images = read_coco_captions(COCO_SAMPLE)
    assert [image.image_id for image in images] == [493652, 535506, 159269]
    assert [(image.width, image.height) for image in images] == [(640, 399), (480, 640), (427, 640)]
    assert str(images[0].file_name) == "000000493652.jpg"
    assert sum(len(image.captions) for image in images) == 15
    first = [annotation_id for annotation_id, _ in images[0].captions]
    assert first == [130438, 134989, 136474, 137611, 139303]


def test_coco_caption_file_errors_name_the_record(tmp_path: Path) -> None:
    document = {
        "info": {},
        "licenses": [],
        "images": [{"id": 9, "file_name": "9.jpg", "width": 4, "height": 3}],
        "annotations": [
            {"id": 3, "image_id": 9, "caption": "b"},
            {"id": 1, "image_id": 9, "caption": "  "},
            {"id": 2, "image_id": 9, "caption": "a"},
        ],
    }
    path = _write_json(tmp_path / "captions.json", document)
    # Sorted by annotation id, blank captions kept: the Karpathy loader rejects them.
    assert read_coco_captions(path)[0].captions == [(1, "  "), (2, "a"), (3, "b")]

    document["annotations"].append({"id": 2, "image_id": 9, "caption": "c"})
    with pytest.raises(DatasetFormatError, match=r"annotations\[3\]: duplicate annotation id 2"):
        read_coco_captions(_write_json(path, document))
    document["annotations"][3] = {"id": 4, "image_id": 10, "caption": "c"}
    with pytest.raises(DatasetFormatError, match="unknown image_id 10"):
        read_coco_captions(_write_json(path, document))
    del document["images"][0]["width"]
    with pytest.raises(DatasetFormatError, match=r"images\[0\]: missing key 'width'"):
        read_coco_captions(_write_json(path, document))


# --- Custom folders -----------------------------------------------------------------------------


def test_custom_folder_delegates_to_karpathy(tmp_path: Path) -> None:
    record = _flickr_record("cat.jpg", "val", ["A cat ."], 0)
    record["filepath"] = "pictures"
    _write_json(tmp_path / "mine.json", {"images": [record]})
    raw = acquire_custom(tmp_path)
    assert raw.karpathy_json == str(tmp_path.resolve() / "mine.json") and raw.entities_root is None
    tables = load_karpathy(Path(raw.karpathy_json), Path(raw.image_root), raw.dataset)
    assert tables.dataset == "custom"
    assert tables.images["path"].tolist() == [str(tmp_path.resolve() / "pictures" / "cat.jpg")]
    assert tables.captions["caption_id"].tolist() == ["cat#0"]


def test_custom_folder_needs_exactly_one_json(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="found none") as caught:
        acquire_custom(tmp_path)
    assert caught.value.path == str(tmp_path)
    _write_json(tmp_path / "a.json", {"images": []})
    _write_json(tmp_path / "b.json", {"images": []})
    with pytest.raises(DatasetFormatError, match="found a.json, b.json"):
        acquire_custom(tmp_path)


# --- Split sizes after image validation ---------------------------------------------------------


def test_a_split_emptied_by_bad_images_is_an_error(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    (folder / "img" / "im4.jpg").write_text("not a picture")
    (folder / "img" / "im5.jpg").unlink()
    raw = acquire_custom(folder)
    with pytest.raises(DatasetFormatError, match="split 'test' kept 0 images") as caught:
        parse_raw_dataset(raw, DatasetSettings())
    assert caught.value.path == str(folder / "data.json")
    assert (
        "2 of its 2 images were rejected (not an image: 1, e.g. "
        f"{folder / 'img' / 'im4.jpg'}, missing file: 1, e.g. {folder / 'img' / 'im5.jpg'})"
    ) in str(caught.value)
    # Without image checks nothing was rejected, so the split is whole.
    assert len(parse_raw_dataset(raw, DatasetSettings(check_images=False)).images) == 6


def test_min_images_per_split(tmp_path: Path) -> None:
    raw = acquire_custom(write_custom_dataset(tmp_path / "custom"))
    assert len(parse_raw_dataset(raw, DatasetSettings(min_images_per_split=1)).images) == 6
    with pytest.raises(DatasetFormatError) as caught:
        parse_raw_dataset(raw, DatasetSettings(min_images_per_split=2))
    message = str(caught.value)
    assert "split 'val' kept 1 images (fewer than 2); 0 of its 1 images were rejected - " in message
    assert "'train'" not in message and "'test'" not in message
