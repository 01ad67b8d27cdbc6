from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from ops.features.boxes import pairwise_iou
from ops.features.proposals import proposal_upper_bound, propose_regions
from ops.parquet_io import read_table

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


def test_finds_the_square_and_keeps_the_limits(images: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "proposals.parquet"
    stats = propose_regions(images, out, max_proposals=200, num_workers=0)
    table = read_table(out)
    assert list(table.columns) == [
        "image_id", "region_id", "x1", "y1", "x2", "y2", "source", "rank"
    ]  # fmt: skip
    assert stats.images == 3 and stats.proposals == len(table) and stats.ground_truth == 0
    for image_id, group in table.groupby("image_id"):
        assert (group["source"] == "proposal").all()
        assert group["region_id"].iloc[0] == f"{image_id}/r0"
        assert group[["x1", "y1", "x2", "y2"]].iloc[0].tolist() == [0, 0, 64, 56]
        assert group["rank"].tolist() == list(range(len(group)))
        boxes = group[["x1", "y1", "x2", "y2"]].to_numpy()
        assert pairwise_iou(np.array([SQUARE]), boxes[1:]).max() >= 0.5
        assert not pd.DataFrame(boxes).duplicated().any()
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        assert (widths >= 8).all() and (heights >= 8).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 56).all()

    capped = tmp_path / "capped.parquet"
    propose_regions(images, capped, max_proposals=3, num_workers=0)
    counts = read_table(capped).groupby("image_id").size()
    assert (counts <= 3 + 1).all() and (counts > 1).all()


def test_parallel_and_repeated_runs_agree(images: pd.DataFrame, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "a.parquet", tmp_path / "b.parquet"
    propose_regions(images, serial, num_workers=0)
    propose_regions(images, parallel, num_workers=2)
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
    stats = propose_regions(images, out, include_ground_truth_for=phrases, num_workers=0)
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
    with pytest.raises(ValueError, match="structured-edge model"):
        propose_regions(images, tmp_path / "e.parquet", method="edge_boxes")
    with pytest.raises(ValueError, match="structured-edge model"):
        propose_regions(
            images, tmp_path / "e.parquet", method="edge_boxes", model_path=tmp_path / "no.yml.gz"
        )
    with pytest.raises(ValueError, match="unknown proposal method"):
        propose_regions(images, tmp_path / "e.parquet", method="sliding_windows")
    assert not (tmp_path / "e.parquet").exists()
