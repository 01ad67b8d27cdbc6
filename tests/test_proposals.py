from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from ops.features import proposals as proposals_module
from ops.features.proposals import (
    exactly_n,
    fill_windows,
    propose_regions,
)
from ops.features.settings import ProposalSettings as Settings
from ops.geometry import pairwise_iou
from ops.metrics.proposal_coverage import proposal_upper_bound
from ops.storage.parquet_io import read_table

SQUARE = (16, 12, 44, 40)  # x1, y1, x2 (exclusive), y2 (exclusive)


def make_images(folder: Path, count: int = 3) -> pd.DataFrame:
    rows = []
    for index in range(count):
        image = Image.new("RGB", (64, 56), (235, 235, 235))
        x1, y1, x2, y2 = SQUARE
        ImageDraw.Draw(image).rectangle([x1, y1, x2 - 1, y2 - 1], fill=(200, 20, 20 + 40 * index))
        path = folder / f"s{index}.png"
        image.save(path)
        rows.append(("tiny", f"s{index}", "train" if index else "test", str(path), 64, 56))
    return pd.DataFrame(rows, columns=["dataset", "image_id", "split", "path", "width", "height"])


def phrase(image_id: str, split: str, box: tuple[float, ...], kind: str = "people") -> dict:
    x1, y1, x2, y2 = box
    return {
        "phrase_id": f"{image_id}#0:{x1}",
        "image_id": image_id,
        "split": split,
        "phrase_type": kind,
        "gt_x1": x1,
        "gt_y1": y1,
        "gt_x2": x2,
        "gt_y2": y2,
    }


@pytest.fixture
def images(tmp_path: Path) -> pd.DataFrame:
    folder = tmp_path / "images"
    folder.mkdir()
    return make_images(folder)


def _boxes_by_image(table: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        image_id: group[["x1", "y1", "x2", "y2"]].to_numpy()
        for image_id, group in table.groupby("image_id")
    }


def test_exactly_n_candidates_that_find_the_square(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "proposals.parquet"
    stats = propose_regions(images, out, Settings(num_proposals=40), num_workers=0)
    table = read_table(out)
    assert list(table.columns) == [
        "image_id", "region_id", "x1", "y1", "x2", "y2", "source", "rank"
    ]  # fmt: skip
    assert stats.images == 3 and stats.proposals == len(table) == 3 * 40
    assert stats.ground_truth == 0
    for image_id, group in table.groupby("image_id"):
        assert (group["source"] == "proposal").all()
        assert group["region_id"].tolist() == [f"{image_id}/r{k}" for k in range(40)]
        assert group["rank"].tolist() == list(range(40))
        boxes = group[["x1", "y1", "x2", "y2"]].to_numpy()
        assert pairwise_iou(np.array([SQUARE]), boxes).max() >= 0.5
        assert not pd.DataFrame(boxes).duplicated().any()
        assert [0, 0, 64, 56] not in boxes.tolist()  # no whole-image candidate by default
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        assert (widths >= 8).all() and (heights >= 8).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 56).all()


def test_whole_image_is_its_own_setting_within_the_n(images: pd.DataFrame, tmp_path: Path) -> None:
    plain, whole = tmp_path / "plain.parquet", tmp_path / "whole.parquet"
    propose_regions(images, plain, Settings(num_proposals=12), num_workers=0)
    propose_regions(images, whole, Settings(num_proposals=12, whole_image=True), num_workers=0)
    plain_boxes, whole_boxes = (
        _boxes_by_image(read_table(plain)),
        _boxes_by_image(read_table(whole)),
    )
    for image_id, boxes in whole_boxes.items():
        assert len(boxes) == 12 and boxes[0].tolist() == [0, 0, 64, 56]
        # The same search, one place shorter: the whole image takes the first slot.
        np.testing.assert_array_equal(boxes[1:], plain_boxes[image_id][:11])


def test_a_search_that_finds_too_few_is_filled_by_fixed_windows(
    images: pd.DataFrame, tmp_path: Path
) -> None:
    short, long = tmp_path / "short.parquet", tmp_path / "long.parquet"
    propose_regions(images, short, Settings(num_proposals=40), num_workers=0)
    stats = propose_regions(images, long, Settings(num_proposals=500), num_workers=0)
    assert stats.proposals == 3 * 500 and stats.filled > 0
    windows = fill_windows(64, 56, 8)
    short_boxes = _boxes_by_image(read_table(short))
    for image_id, boxes in _boxes_by_image(read_table(long)).items():
        assert len(boxes) == 500
        # The same search first (a longer list only extends a shorter one) ...
        np.testing.assert_array_equal(boxes[:40], short_boxes[image_id])
        # ... then every fixed window not already there; a 64×56 image has too few distinct
        # boxes for 500, so after them the candidates repeat from the start, in order.
        distinct = len(pd.DataFrame(boxes).drop_duplicates())
        assert not pd.DataFrame(boxes[:distinct]).duplicated().any()
        present = {tuple(box) for box in boxes[:distinct].tolist()}
        assert {tuple(w) for w in windows.tolist()} <= present
        np.testing.assert_array_equal(
            boxes[distinct:], np.resize(boxes[:distinct], (500 - distinct, 4))
        )
    assert [0, 0, 64, 56] not in windows.tolist()
    assert windows[0].tolist() == [0, 0, round(64 * 0.8), round(56 * 0.8)]
    boxes, filled = exactly_n(np.zeros((0, 4)), 50, 4, 4, 8, whole_image=True)
    assert len(boxes) == 50 and boxes[0].tolist() == [0, 0, 4, 4] and filled == 49


def test_max_side_searches_a_downscaled_copy(tmp_path: Path) -> None:
    image = Image.new("RGB", (256, 224), (235, 235, 235))
    ImageDraw.Draw(image).rectangle([64, 48, 175, 159], fill=(200, 20, 20))
    image.save(tmp_path / "big.png")
    table = pd.DataFrame({"image_id": ["big"], "path": [str(tmp_path / "big.png")]})
    full, small = tmp_path / "full.parquet", tmp_path / "small.parquet"
    propose_regions(table, full, Settings(num_proposals=30), num_workers=0)
    propose_regions(table, small, Settings(num_proposals=30, max_side=64), num_workers=0)
    full_boxes = read_table(full)[["x1", "y1", "x2", "y2"]].to_numpy()
    small_boxes = read_table(small)[["x1", "y1", "x2", "y2"]].to_numpy()
    square = np.array([[64, 48, 176, 160]])
    assert pairwise_iou(square, full_boxes).max() >= 0.9
    assert pairwise_iou(square, small_boxes).max() >= 0.5
    # Boxes found on the 4× smaller copy are mapped back: multiples of 4 in full pixels.
    assert not np.array_equal(full_boxes, small_boxes)
    assert small_boxes.max() <= 256


def test_parallel_and_repeated_runs_agree(images: pd.DataFrame, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "a.parquet", tmp_path / "b.parquet"
    propose_regions(images, serial, Settings(), num_workers=0)
    propose_regions(images, parallel, Settings(), num_workers=2)
    pd.testing.assert_frame_equal(read_table(serial), read_table(parallel))


def test_ground_truth_only_from_train_phrases(images: pd.DataFrame, tmp_path: Path) -> None:
    phrases = pd.DataFrame(
        [
            phrase("s1", "train", (1.0, 2.0, 30.0, 40.0)),
            phrase("s1", "train", (1.0, 2.0, 30.0, 40.0)),  # same box twice: one candidate
            phrase("s1", "train", (5.0, 5.0, 20.0, 20.0)),
            phrase("s1", "train", (math.nan,) * 4, kind="notvisual"),
            phrase("s0", "test", (3.0, 3.0, 9.0, 9.0)),
        ]
    )
    out = tmp_path / "proposals.parquet"
    stats = propose_regions(
        images, out, Settings(), include_ground_truth_for=phrases, num_workers=0
    )
    table = read_table(out)
    ground_truth = table[table["source"] == "ground_truth"]
    assert stats.ground_truth == 2
    assert ground_truth["region_id"].tolist() == ["s1/g0", "s1/g1"]
    assert ground_truth["rank"].tolist() == [0, 1]
    assert ground_truth[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [
        [1, 2, 30, 40],
        [5, 5, 20, 20],
    ]
    # Rows stay grouped by image, ground truth after that image's proposals.
    s1_rows = table.index[table["image_id"] == "s1"]
    assert list(s1_rows) == list(range(s1_rows[0], s1_rows[-1] + 1))
    assert table.loc[s1_rows, "source"].tolist()[-2:] == ["ground_truth", "ground_truth"]


def test_upper_bound_on_a_hand_example() -> None:
    phrases = pd.DataFrame(
        [
            phrase("a", "test", (0.0, 0.0, 10.0, 10.0)),  # covered: IoU 0.81 with (0,0,9,9)
            phrase("a", "test", (20.0, 20.0, 30.0, 30.0)),  # IoU 0.25 only: not covered
            phrase("a", "test", (math.nan,) * 4),  # no box: excluded
            phrase("b", "test", (0.0, 0.0, 10.0, 10.0), kind="notvisual"),  # excluded
            phrase("b", "train", (0.0, 0.0, 10.0, 20.0)),  # covered: IoU 0.5 exactly
            phrase("c", "train", (0.0, 0.0, 10.0, 10.0)),  # only a ground-truth candidate
            phrase("d", "train", (0.0, 0.0, 10.0, 10.0)),  # image without proposals
        ]
    )
    proposals = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "c"],
            "region_id": ["a/r0", "a/r1", "b/r0", "c/g0"],
            "x1": [0.0, 20.0, 0.0, 0.0],
            "y1": [0.0, 20.0, 0.0, 0.0],
            "x2": [9.0, 25.0, 10.0, 10.0],
            "y2": [9.0, 25.0, 10.0, 10.0],
            "source": ["proposal", "proposal", "proposal", "ground_truth"],
            "rank": [0, 1, 0, 0],
        }
    )
    bound = proposal_upper_bound(phrases, proposals).set_index("split")
    assert bound.loc["test", "phrases"] == 2 and bound.loc["test", "covered"] == 1
    assert bound.loc["train", "phrases"] == 3 and bound.loc["train", "covered"] == 1
    assert bound.loc["test", "upper_bound"] == pytest.approx(0.5)
    assert bound.loc["train", "upper_bound"] == pytest.approx(1 / 3)


def test_pairwise_iou_values() -> None:
    iou = pairwise_iou(
        np.array([[0, 0, 10, 10], [0, 0, 0, 0]]), np.array([[5, 0, 15, 10], [0, 0, 10, 10]])
    )
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.0, 0.0]])


def test_bad_methods_are_explained(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    with pytest.raises(ValueError, match="structured-edge model"):
        propose_regions(images, out, Settings(method="edge_boxes"), num_workers=0)
    missing = Settings(method="edge_boxes", edge_model_path=str(tmp_path / "no.yml.gz"))
    with pytest.raises(ValueError, match="structured-edge model"):
        propose_regions(images, out, missing, num_workers=0)
    with pytest.raises(ValueError, match="unknown proposal method"):
        proposals_module.resolve_method("sliding_windows", None)
    with pytest.raises(ValidationError, match="literal_error|Input should be 'auto'"):
        Settings(method="sliding_windows")
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(num_proposals=0)
    assert not (tmp_path / "e.parquet").exists()


def test_a_model_path_selects_edge_boxes(tmp_path: Path) -> None:
    model = tmp_path / "model.yml.gz"
    model.write_bytes(b"")
    assert proposals_module.resolve_method("auto", None) == "selective_search_fast"
    assert proposals_module.resolve_method("auto", model) == "edge_boxes"
    assert proposals_module.resolve_method("selective_search_quality", None) == (
        "selective_search_quality"
    )


def test_opencv_without_contrib_is_a_clear_error(
    images: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(proposals_module.cv2, "ximgproc")
    with pytest.raises(RuntimeError, match="install opencv-contrib-python-headless"):
        propose_regions(images, tmp_path / "e.parquet", Settings(), num_workers=0)
    assert not (tmp_path / "e.parquet").exists()
