"""The compact proposals table: read in several batches it holds exactly the table's rows, and
the graph's region edges built from it are those of a by-hand IoU over the DataFrame."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ops.features.proposals import PROPOSAL_SCHEMA
from ops.features.region_table import positions, region_table
from ops.geometry import pairwise_iou
from ops.graph.build import PHRASE_REGION, REGION_REGION, region_edges

# Image ids first seen out of sorted order, and one image's rows split between batches and
# interleaved with another's: codes must still follow the sorted ids.
IMAGES = ["img9", "img10", "img2", "img9", "img10", "img2"]


def _proposals(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for part, image_id in enumerate(IMAGES):
        n = 7
        x1, y1 = rng.uniform(0, 40, n), rng.uniform(0, 40, n)
        frames.append(
            pd.DataFrame(
                {
                    "image_id": image_id,
                    "region_id": [f"{image_id}/r{part}_{k}" for k in range(n)],
                    "x1": x1,
                    "y1": y1,
                    "x2": x1 + rng.uniform(10, 50, n),
                    "y2": y1 + rng.uniform(10, 50, n),
                    "source": ["ground_truth" if k == 0 else "proposal" for k in range(n)],
                    "rank": np.arange(n, dtype=np.int32),
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    return pa.Table.from_pandas(frame, PROPOSAL_SCHEMA, preserve_index=False).to_pandas()


def test_batched_read_holds_the_tables_rows(tmp_path) -> None:
    proposals = _proposals(np.random.default_rng(0))
    path = tmp_path / "proposals.parquet"
    pq.write_table(pa.Table.from_pandas(proposals, PROPOSAL_SCHEMA, preserve_index=False), path)
    whole = region_table(path)
    for table in (region_table(path, batch_size=5), region_table(proposals, batch_size=3), whole):
        assert table.image_ids.tolist() == sorted(set(IMAGES))
        assert table.image_ids[table.image].tolist() == proposals["image_id"].tolist()
        assert table.region_ids.tolist() == proposals["region_id"].tolist()
        np.testing.assert_array_equal(table.boxes, proposals[["x1", "y1", "x2", "y2"]])
        assert table.boxes.dtype == np.float32
        assert table.is_gt.tolist() == (proposals["source"] == "ground_truth").tolist()
        assert table.is_proposal.tolist() == (proposals["source"] == "proposal").tolist()
    frame = whole.proposal_frame(["img2", "absent"])
    expected = proposals[(proposals["image_id"] == "img2") & (proposals["source"] == "proposal")]
    assert frame["region_id"].tolist() == expected["region_id"].tolist()
    np.testing.assert_array_equal(
        frame[["x1", "y1", "x2", "y2"]], expected[["x1", "y1", "x2", "y2"]]
    )
    wanted = ["img2/r5_3", "nowhere", "img9/r0_0"]
    assert positions(whole.region_ids, pa.chunked_array([wanted[:1], wanted[1:]])).tolist() == (
        positions(whole.region_ids, wanted).tolist()
    )
    assert positions(whole.region_ids, wanted).tolist() == [
        int(np.flatnonzero(proposals["region_id"] == "img2/r5_3")[0]),
        -1,
        0,
    ]


def test_region_edges_match_a_by_hand_iou_whatever_the_batches() -> None:
    rng = np.random.default_rng(1)
    proposals = _proposals(rng)
    phrase_boxes = proposals.groupby("image_id").head(2)[["image_id", "x1", "y1", "x2", "y2"]]
    phrases = pd.DataFrame(
        {
            "phrase_id": [f"p{k}" for k in range(len(phrase_boxes))],
            "image_id": phrase_boxes["image_id"].to_numpy(),
            "phrase_type": "people",
            "gt_x1": phrase_boxes["x1"].to_numpy(np.float64) + 1.0,
            "gt_y1": phrase_boxes["y1"].to_numpy(np.float64),
            "gt_x2": phrase_boxes["x2"].to_numpy(np.float64),
            "gt_y2": phrase_boxes["y2"].to_numpy(np.float64) - 1.0,
        }
    )
    expected_pr, expected_rr = set(), set()
    for _, phrase in phrases.iterrows():
        regions = proposals[proposals["image_id"] == phrase["image_id"]]
        gt = phrase[["gt_x1", "gt_y1", "gt_x2", "gt_y2"]].to_numpy(np.float64)[None]
        iou = pairwise_iou(gt, regions[["x1", "y1", "x2", "y2"]].to_numpy())[0]
        positive = regions["region_id"].to_numpy()[iou >= 0.3]
        expected_pr |= {(phrase["phrase_id"], r) for r in positive}
        expected_rr |= {(a, b) for a in positive for b in positive if a != b}
    assert expected_pr and expected_rr
    blocks = []
    for regions in (proposals, region_table(proposals, batch_size=4)):
        edges = pd.concat(region_edges(phrases, regions, 0.3, images_per_block=2))
        blocks.append(edges.reset_index(drop=True))
        pairs = {
            relation: set(zip(group["source_id"], group["target_id"], strict=True))
            for relation, group in edges.groupby("relation")
        }
        assert pairs[PHRASE_REGION] == expected_pr
        assert pairs[REGION_REGION] == expected_rr
    # The same rows in the same order: the graph's fingerprint hashes them.
    pd.testing.assert_frame_equal(blocks[0], blocks[1])


def test_a_region_feature_without_a_proposal_is_named(tmp_path) -> None:
    from ops.storage.parquet_io import FeatureWriter
    from ops.training.inputs import phrase_region_splits

    proposals = _proposals(np.random.default_rng(2))
    path = tmp_path / "regions.parquet"
    ids = {"image_id": pa.string(), "region_id": pa.string()}
    with FeatureWriter(path, ids, 3) as writer:
        writer.write(
            {"image_id": ["img2", "img2"], "region_id": ["img2/r2_1", "img2/r9"]}, np.ones((2, 3))
        )
    message = f"{path}: region img2/r9 is not in the proposals file"
    with pytest.raises(ValueError, match=re.escape(message)):
        phrase_region_splits(path, proposals, tmp_path / "unread.parquet", pd.DataFrame())
