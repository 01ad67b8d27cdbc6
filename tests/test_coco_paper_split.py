"""The authors' COCO split: their three lists in the published format (one COCO 2014 file
name per line), read from a folder or a URL with checksums, applied to the Karpathy file."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from ops.data.acquire import RawDataset
from ops.data.coco_paper_split import (
    PAPER_JSON,
    PAPER_SPLIT_SIZES,
    apply_paper_split,
    provide_lists,
    read_split_list,
    with_paper_split,
)
from ops.data.karpathy import load_karpathy
from ops.data.registry import DatasetRegistryError, add_dataset, load_registry
from ops.data.tables import DatasetFormatError
from tests.http_fixture import FileServer

TRAIN = ["COCO_train2014_000000000009.jpg", "COCO_val2014_000000000042.jpg"]
VAL = ["COCO_train2014_000000000025.jpg"]
TEST = ["COCO_val2014_000000391895.jpg", "COCO_train2014_000000000030.jpg"]
UNLISTED = "COCO_val2014_000000000073.jpg"


def _karpathy_json(path: Path) -> Path:
    """Karpathy-style records of every image above, all in Karpathy's own splits."""
    images = []
    for index, name in enumerate([*TRAIN, *VAL, *TEST, UNLISTED]):
        folder = name.split("_")[1]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "cocoid": int(name[-16:-4]),
                "imgid": index,
                "split": "restval" if index % 2 else "test",
                "sentences": [
                    {"raw": f"caption {j} of {name}", "imgid": index, "sentid": 10 * index + j}
                    for j in range(5)
                ],
            }
        )
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def _lists(folder: Path, test_lines: str | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # As published: one name per line; CRLF and a final blank line are tolerated.
    contents = {
        "train": "\r\n".join(TRAIN) + "\r\n",
        "val": "\n".join(VAL) + "\n\n",
        "test": "\n".join(TEST) + "\n" if test_lines is None else test_lines,
    }
    paths = {}
    for split, text in contents.items():
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(text, newline="")
    return paths


def test_lists_set_each_images_split_and_unlisted_images_are_counted(tmp_path: Path) -> None:
    source = _karpathy_json(tmp_path / "dataset_coco.json")
    out = apply_paper_split(source, _lists(tmp_path / "lists"), tmp_path / PAPER_JSON)
    tables = load_karpathy(out, tmp_path / "images", "coco_paper")
    splits = dict(zip(tables.images["image_id"], tables.images["split"], strict=True))
    expected = {str(int(name[-16:-4])): "train" for name in TRAIN}
    expected |= {str(int(name[-16:-4])): "val" for name in VAL}
    expected |= {str(int(name[-16:-4])): "test" for name in TEST}
    assert splits == expected
    # The test list mixes train2014 and val2014 images; paths keep each one's folder.
    test_paths = sorted(tables.images.loc[tables.images["split"] == "test", "path"])
    assert [Path(p).parent.name for p in test_paths] == ["train2014", "val2014"]
    left_out = tables.rejects[tables.rejects["stage"] == "images"]
    assert left_out[["item_id", "reason"]].values.tolist() == [
        ["73", "not in the authors' split lists"]
    ]
    assert len(tables.captions) == 5 * len(expected)


@pytest.mark.parametrize(
    ("test_lines", "line", "message"),
    [
        # A name the COCO images do not have.
        (f"{TEST[0]}\nCOCO_val2014_000000999999.jpg\n", 2, "not among the COCO 2014 images"),
        # Not a COCO 2014 file name at all.
        (f"{TEST[0]}\n\nCOCO_val2014_391895.jpg\n", 3, "not a COCO 2014 file name"),
        ("391895\n", 1, "not a COCO 2014 file name"),
        # The same name twice in one list, or in two lists.
        (f"{TEST[0]}\n{TEST[1]}\n{TEST[0]}\n", 3, "repeats line 1"),
        (f"{TEST[0]}\n{TRAIN[1]}\n", 2, "already in train.txt line 2 (train)"),
    ],
)
def test_a_bad_line_is_one_error_naming_the_list_and_line(
    tmp_path: Path, test_lines: str, line: int, message: str
) -> None:
    source = _karpathy_json(tmp_path / "dataset_coco.json")
    lists = _lists(tmp_path / "lists", test_lines)
    with pytest.raises(DatasetFormatError, match=re.escape(message)) as error:
        apply_paper_split(source, lists, tmp_path / PAPER_JSON)
    assert str(error.value).startswith(f"{lists['test']}:{line}: ")
    assert error.value.line == line and "\n" not in str(error.value)
    assert not (tmp_path / PAPER_JSON).exists()


def test_read_split_list_returns_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "test.txt"
    path.write_text(f"\ufeff{TEST[0]}\n\n  {TEST[1]}  \n", encoding="utf-8")
    assert read_split_list(path) == [(1, TEST[0]), (3, TEST[1])]


def test_lists_download_from_a_url_and_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "published"
    published = {path.name: path.read_bytes() for path in _lists(folder).values()}
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in published.items()}
    target = tmp_path / "raw" / "paper_split"
    target.mkdir(parents=True)
    # A stale copy that does not match its checksum is fetched again.
    (target / "train.txt").write_text("COCO_train2014_000000000001.jpg\n")
    with FileServer() as server:
        for name, data in published.items():
            server.add_file(f"/lists/{name}", data)
        lists = provide_lists(server.url("/lists/"), target, checksums)
    assert {split: path.read_bytes() for split, path in lists.items()} == {
        split: published[f"{split}.txt"] for split in ("train", "val", "test")
    }
    with pytest.raises(ValueError, match=re.escape("missing: ['val.txt', 'test.txt']")):
        provide_lists("http://127.0.0.1:9/lists", target, {"train.txt": "0" * 64})


def test_raw_dataset_on_the_paper_split(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    source = _karpathy_json(tmp_path / "raw" / "dataset_coco.json")
    _lists(tmp_path / "lists")
    raw = RawDataset(dataset="coco_paper", karpathy_json=str(source), image_root=str(tmp_path))
    paper = with_paper_split(raw, tmp_path / "raw", str(tmp_path / "lists"))
    assert paper.karpathy_json == str(tmp_path / "raw" / PAPER_JSON)
    assert (
        paper.declared_images == PAPER_SPLIT_SIZES == {"train": 113287, "val": 9000, "test": 1000}
    )
    with pytest.raises(DatasetFormatError, match="split lists missing"):
        with_paper_split(raw, tmp_path / "raw", str(tmp_path / "nowhere"))


def test_registry_takes_the_paper_split_for_coco_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    lists = tmp_path / "lists"
    _lists(lists)
    with pytest.raises(DatasetRegistryError, match="source 'coco' only"):
        add_dataset(root, "c1", "flickr30k", split="paper", split_lists=lists)
    with pytest.raises(DatasetRegistryError, match="needs --split-lists"):
        add_dataset(root, "c2", "coco", split="paper")
    with pytest.raises(DatasetRegistryError, match="SHA-256"):
        add_dataset(root, "c3", "coco", split="paper", split_lists="https://example.org/coco")
    with pytest.raises(DatasetRegistryError, match="lacks"):
        add_dataset(root, "c4", "coco", split="paper", split_lists=tmp_path)
    entry = add_dataset(root, "coco_paper", "coco", split="paper", split_lists=lists)
    assert load_registry(root)["coco_paper"] == entry
    assert entry.split == "paper" and entry.split_lists == str(lists.resolve())
    assert load_registry(root).get("c1") is None
    assert add_dataset(root, "coco", "coco").split == "karpathy"
