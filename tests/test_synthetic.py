"""The synthetic dataset, checked on the files themselves (json, xml.etree, regex)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ops.data.synthetic import writer as synthetic_writer
from ops.data.synthetic.captions import POSITION_WORDS, SIZE_WORDS
from ops.data.synthetic.scenes import (
    BACKGROUND_COLOURS,
    SHAPE_COLOURS,
    SHAPE_WORDS,
    render_scene,
    sample_scene,
)
from ops.data.synthetic.writer import generate_synthetic

SEED = 3
SMALL = {"n_train": 20, "n_val": 5, "n_test": 5, "image_size": 64, "captions_per_image": 5}
PHRASE = re.compile(r"\[/EN#(\d+)((?:/[^\s\]/]+)+) ([^\]]+)\]")
SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"


def strip_markup(line: str) -> str:
    return PHRASE.sub(lambda match: match.group(3), line)


def phrases(line: str) -> list[tuple[int, str, str]]:
    return [(int(m.group(1)), m.group(2).lstrip("/"), m.group(3)) for m in PHRASE.finditer(line)]


def parse_annotation(path: Path) -> tuple[tuple[int, int], dict[int, list[tuple]], set[int]]:
    """(width, height), chain -> VOC boxes, chains flagged as scene without a box."""
    root = ET.parse(path).getroot()
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    boxes: dict[int, list[tuple]] = {}
    boxless_scene: set[int] = set()
    for element in root.findall("object"):
        names = [int(name.text) for name in element.findall("name")]
        box = element.find("bndbox")
        if box is None:
            assert element.findtext("scene") == "1" and element.findtext("nobndbox") == "1"
            boxless_scene.update(names)
            continue
        corners = tuple(int(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        for name in names:
            boxes.setdefault(name, []).append(corners)
    return size, boxes, boxless_scene


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("synthetic") / "data"
    summary = generate_synthetic(out_dir, seed=SEED, **SMALL)
    assert not summary.reused
    document = json.loads((out_dir / "dataset_synthetic.json").read_text(encoding="utf-8"))
    return out_dir, document


def sentence_lines(out_dir: Path, image_id: str) -> list[str]:
    text = (out_dir / "Sentences" / f"{image_id}.txt").read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text.split("\n")[:-1]


def test_files_counts_and_splits(dataset):
    out_dir, document = dataset
    assert document["dataset"] == "synthetic"
    images = document["images"]
    assert [record["split"] for record in images] == ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    assert [record["imgid"] for record in images] == list(range(30))
    all_sentids = [sentid for record in images for sentid in record["sentids"]]
    assert len(set(all_sentids)) == 150
    for record in images:
        assert "filepath" not in record
        image_id = Path(record["filename"]).stem
        assert re.fullmatch(r"s\d{7}", image_id)
        assert [s["sentid"] for s in record["sentences"]] == record["sentids"]
        assert {s["imgid"] for s in record["sentences"]} == {record["imgid"]}
        for sentence in record["sentences"]:
            assert sentence["tokens"] == re.findall(r"[a-z]+", sentence["raw"].lower())
        with Image.open(out_dir / "images" / record["filename"]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
        assert (out_dir / "Annotations" / f"{image_id}.xml").is_file()
    summary = generate_synthetic(out_dir, seed=SEED, **SMALL)
    assert summary.counts == {"train": 20, "val": 5, "test": 5}
    assert summary.n_captions == 150
    n_phrases = sum(
        len(phrases(line))
        for record in images
        for line in sentence_lines(out_dir, Path(record["filename"]).stem)
    )
    assert summary.n_phrases == n_phrases


def test_markup_stripped_equals_raw_caption(dataset):
    out_dir, document = dataset
    for record in document["images"]:
        lines = sentence_lines(out_dir, Path(record["filename"]).stem)
        assert [strip_markup(line) for line in lines] == [s["raw"] for s in record["sentences"]]
        assert all("[" not in strip_markup(line) for line in lines)


def test_every_phrase_chain_is_annotated(dataset):
    out_dir, document = dataset
    entity_types = {"shapes", "other", "scene", "notvisual"}
    seen_types: set[str] = set()
    for record in document["images"]:
        image_id = Path(record["filename"]).stem
        size, boxes, boxless_scene = parse_annotation(out_dir / "Annotations" / f"{image_id}.xml")
        assert size == (64, 64)
        for chain_boxes in boxes.values():
            for xmin, ymin, xmax, ymax in chain_boxes:
                assert 1 <= xmin <= xmax <= 64 and 1 <= ymin <= ymax <= 64
        for line in sentence_lines(out_dir, image_id):
            for chain, entity_type, _ in phrases(line):
                assert entity_type in entity_types
                seen_types.add(entity_type)
                if entity_type == "notvisual":
                    assert chain == 0 and chain not in boxes
                elif entity_type == "scene":
                    assert chain in boxless_scene and chain not in boxes
                elif entity_type == "other":  # a phrase about several shapes
                    assert len(boxes[chain]) >= 2
                else:
                    assert len(boxes[chain]) == 1
    assert seen_types == entity_types


def test_boxes_match_the_drawn_shapes(dataset):
    out_dir, _ = dataset
    palette = {name: np.array(rgb, dtype=float) for name, rgb in SHAPE_COLOURS.items()}
    for index in range(30):
        image_id = f"s{index + 1:07d}"
        scene = sample_scene(SEED, index, 64)
        _, boxes, _ = parse_annotation(out_dir / "Annotations" / f"{image_id}.xml")
        lossless = np.asarray(render_scene(scene, SEED, index)).astype(int)
        jpeg = np.asarray(Image.open(out_dir / "images" / f"{image_id}.jpg")).astype(float)
        for k, shape in enumerate(scene.shapes):
            x0, y0, x1, y1 = shape.box
            assert boxes[k + 1] == [(x0 + 1, y0 + 1, x1, y1)]
            # The shape's pixels, searched one pixel beyond its box, span exactly the box.
            window = lossless[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1]
            ys, xs = np.nonzero(np.all(window == SHAPE_COLOURS[shape.colour], axis=2))
            found = (xs.min() + x0 - 1, ys.min() + y0 - 1, xs.max() + x0, ys.max() + y0)
            assert found == shape.box
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            centre = jpeg[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(axis=0)
            nearest = min(palette, key=lambda name: np.linalg.norm(palette[name] - centre))
            assert nearest == shape.colour, (image_id, k, centre)
            assert np.abs(centre - palette[shape.colour]).max() < 60


def test_captions_are_faithful_and_name_every_colour(dataset):
    out_dir, document = dataset
    colour_words = set(SHAPE_COLOURS) | {w for name in BACKGROUND_COLOURS for w in name.split()}
    size_words = {word for names in SIZE_WORDS.values() for name in names for word in name.split()}
    for index, record in enumerate(document["images"]):
        scene = sample_scene(SEED, index, 64)
        tokens = {token for s in record["sentences"] for token in s["tokens"]}
        assert {shape.colour for shape in scene.shapes} <= tokens
        assert set(scene.background.split()) <= tokens or "grey" in tokens
        for line in sentence_lines(out_dir, Path(record["filename"]).stem):
            for chain, entity_type, text in phrases(line):
                if entity_type != "shapes":
                    continue
                shape = scene.shapes[chain - 1]
                words = text.lower().split()
                assert set(words) & colour_words <= {shape.colour}
                own_sizes = {w for name in SIZE_WORDS[shape.size] for w in name.split()}
                assert set(words) & size_words <= own_sizes
                nouns = {name.split()[-1] for name in SHAPE_WORDS[shape.kind][0]}
                assert words[-1] in nouns | {"one"}


RELATION_HOLDS = {
    "to the left of": lambda a, b: a[2] < b[0],
    "left of": lambda a, b: a[2] < b[0],
    "to the right of": lambda a, b: a[0] > b[2],
    "right of": lambda a, b: a[0] > b[2],
    "above": lambda a, b: a[3] < b[1],
    "below": lambda a, b: a[1] > b[3],
    "under": lambda a, b: a[1] > b[3],
    "next to": lambda a, b: True,
    "beside": lambda a, b: True,
}


def test_relations_and_positions_are_true(dataset):
    out_dir, document = dataset
    shape_phrase = r"\[/EN#(\d+)/shapes [^\]]+\]"
    relations = "|".join(sorted(RELATION_HOLDS, key=len, reverse=True))
    relation = re.compile(rf"{shape_phrase} (?:is )?({relations}) {shape_phrase}")
    places = "|".join(sorted((p for ps in POSITION_WORDS.values() for p in ps), key=len)[::-1])
    placed = re.compile(rf"{shape_phrase} (?:is |sits |is placed |appears )?({places})\b")
    cell_of = {phrase: cell for cell, names in POSITION_WORDS.items() for phrase in names}
    checked = {"relations": 0, "positions": 0}
    for record in document["images"]:
        image_id = Path(record["filename"]).stem
        _, boxes, _ = parse_annotation(out_dir / "Annotations" / f"{image_id}.xml")
        for line in sentence_lines(out_dir, image_id):
            for first, words, second in relation.findall(line):
                box_a, box_b = boxes[int(first)][0], boxes[int(second)][0]
                assert RELATION_HOLDS[words](box_a, box_b), (image_id, line)
                checked["relations"] += 1
            for chain, words in placed.findall(line):
                xmin, ymin, xmax, ymax = boxes[int(chain)][0]
                centre = ((xmin + xmax) / 2 - 1, (ymin + ymax) / 2 - 1)
                row, col = (int(value // (64 / 3)) for value in centre[::-1])
                assert (row, col) == cell_of[words], (image_id, line)
                checked["positions"] += 1
    assert checked["relations"] >= 10 and checked["positions"] >= 20, checked


def read_all(out_dir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out_dir)): path.read_bytes()
        for path in sorted(out_dir.rglob("*"))
        if path.is_file() and path.name != "generation.json"
    }


def test_deterministic_for_a_seed(dataset, tmp_path):
    out_dir, _ = dataset
    again = generate_synthetic(tmp_path / "again", seed=SEED, **SMALL)
    assert read_all(again.out_dir) == read_all(out_dir)
    other = generate_synthetic(tmp_path / "other", seed=SEED + 1, **SMALL)
    first, second = read_all(out_dir), read_all(other.out_dir)
    assert first.keys() == second.keys()
    assert first["dataset_synthetic.json"] != second["dataset_synthetic.json"]
    assert sum(first[name] != second[name] for name in first) > 80


def test_reuses_a_complete_directory_and_replaces_a_different_one(tmp_path):
    out_dir = tmp_path / "data"
    tiny = {**SMALL, "n_train": 4, "n_val": 1, "n_test": 1}
    generate_synthetic(out_dir, seed=1, **tiny)
    marker = out_dir / "images" / "s0000001.jpg"
    inode = marker.stat().st_ino
    reused = generate_synthetic(out_dir, seed=1, **tiny)
    assert reused.reused and reused.counts == {"train": 4, "val": 1, "test": 1}
    assert marker.stat().st_ino == inode

    changed = generate_synthetic(out_dir, seed=1, **{**tiny, "n_test": 3})
    assert not changed.reused and changed.counts["test"] == 3
    assert (out_dir / "images" / "s0000008.jpg").is_file()
    assert json.loads((out_dir / "generation.json").read_text())["parameters"]["n_test"] == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic_writer.render_scene

    def failing(scene, seed, index):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(scene, seed, index)

    monkeypatch.setattr(synthetic_writer, "render_scene", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_synthetic(tmp_path / "data", seed=0, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    out_dir = tmp_path / "data"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="generation.json"):
        generate_synthetic(out_dir, seed=0, **SMALL)
    assert (out_dir / "notes.txt").read_text() == "keep me"


def test_annotation_objects_are_shaped_like_real_flickr30k_entities(dataset):
    real_dir = SAMPLES / "flickr30k_entities" / "Annotations"
    if not real_dir.is_dir():
        pytest.skip(f"real samples absent: {real_dir}")

    def layouts(path: Path) -> set[tuple[str, ...]]:
        root = ET.parse(path).getroot()
        assert [child.tag for child in root][:2] == ["filename", "size"]
        return {
            tuple(dict.fromkeys(child.tag for child in element))
            for element in root.findall("object")
        }

    real = set().union(*(layouts(path) for path in real_dir.glob("*.xml")))
    out_dir, _ = dataset
    ours = set().union(*(layouts(path) for path in (out_dir / "Annotations").glob("*.xml")))
    assert ours == {("name", "bndbox"), ("name", "scene", "nobndbox")}
    assert ours <= real
