"""Feature matrices stay on disk for training and evaluation: no split-sized copy is
made in memory, the cache follows the feature file, and bad rows are named."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ops.features.feature_cache import cache_path, feature_rows
from ops.storage.parquet_io import FeatureWriter, read_features
from ops.training.inputs import phrase_region_splits
from ops.training.placement import DeviceFeatures

SPLITS = {"train": 300, "val": 50, "test": 50}
REGIONS_PER_IMAGE = 50
REGION_DIM = 2048  # 20,000 regions: 164 MB of float32


def _region_features(path: Path, image_ids: list[str]) -> None:
    rng = np.random.default_rng(0)
    columns = {"image_id": pa.string(), "region_id": pa.string()}
    with FeatureWriter(path, columns, REGION_DIM) as writer:
        for start in range(0, len(image_ids), 40):
            block = image_ids[start : start + 40]
            ids = np.repeat(block, REGIONS_PER_IMAGE)
            regions = [f"{i}/r{k}" for i in block for k in range(REGIONS_PER_IMAGE)]
            matrix = rng.random((len(ids), REGION_DIM), dtype=np.float32)
            writer.write({"image_id": ids, "region_id": regions}, matrix)


@pytest.fixture(scope="module")
def phrase_task(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("regions")
    images = [(f"{split}{k}", split) for split, n in SPLITS.items() for k in range(n)]
    image_ids = [image for image, _ in images]
    _region_features(root / "region.parquet", image_ids)
    box = {"x1": 0.0, "y1": 0.0, "x2": 50.0, "y2": 50.0}
    proposals = pd.DataFrame(
        [
            {"image_id": i, "region_id": f"{i}/r{k}", **box, "source": "proposal", "rank": k}
            for i in image_ids
            for k in range(REGIONS_PER_IMAGE)
        ]
    )
    phrases = pd.DataFrame(
        {
            "phrase_id": [f"{i}/p" for i, _ in images],
            "image_id": image_ids,
            "split": [split for _, split in images],
            "phrase_type": "people",
            "gt_x1": 0.0,
            "gt_y1": 0.0,
            "gt_x2": 40.0,
            "gt_y2": 40.0,
        }
    )
    with FeatureWriter(
        root / "phrase.parquet", {"phrase_id": pa.string(), "image_id": pa.string()}, 8
    ) as writer:
        writer.write(
            {"phrase_id": phrases["phrase_id"], "image_id": phrases["image_id"]},
            np.ones((len(phrases), 8), np.float32),
        )
    return root, proposals, phrases


def _splits(root: Path, proposals: pd.DataFrame, phrases: pd.DataFrame):
    return phrase_region_splits(
        root / "region.parquet", proposals, root / "phrase.parquet", phrases
    )


def test_splits_map_region_features_without_copying_them(phrase_task) -> None:
    root, proposals, phrases = phrase_task
    _splits(root, proposals, phrases)  # writes the cache
    tracemalloc.start()
    try:
        splits = _splits(root, proposals, phrases)
        features = DeviceFeatures.of(splits["train"].data, torch.device("cpu"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    train_bytes = SPLITS["train"] * REGIONS_PER_IMAGE * REGION_DIM * 4  # 123 MB
    assert peak < train_bytes / 4, f"peak {peak / 2**20:.1f} MiB"
    _, expected = read_features(root / "region.parquet")
    train = splits["train"].data.region_features
    assert train.shape == (15_000, REGION_DIM)
    np.testing.assert_array_equal(train[[0, 12_345, 14_999]], expected[[0, 12_345, 14_999]])
    np.testing.assert_array_equal(features.image_features[17].numpy(), expected[17])
    test = splits["test"].data.region_features
    np.testing.assert_array_equal(test[-1], expected[-1])


def test_cache_follows_the_feature_file(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    with FeatureWriter(path, {"image_id": pa.string()}, 3) as writer:
        writer.write({"image_id": ["a", "b"]}, np.eye(2, 3, dtype=np.float32))
    ids, matrix = feature_rows(path)
    first = cache_path(path)
    assert ids["image_id"].tolist() == ["a", "b"]
    assert matrix.take().tolist() == [[1, 0, 0], [0, 1, 0]]
    written = first.stat().st_mtime_ns
    os.utime(first, ns=(written - 10**9, written - 10**9))
    feature_rows(path)
    assert first.stat().st_mtime_ns == written - 10**9  # reused, not rewritten
    with FeatureWriter(path, {"image_id": pa.string()}, 3) as writer:
        writer.write({"image_id": ["c"]}, np.full((1, 3), 7, np.float32))
    os.utime(path, ns=(first.stat().st_mtime_ns + 10**9,) * 2)
    ids, matrix = feature_rows(path)
    assert ids["image_id"].tolist() == ["c"] and matrix.take().tolist() == [[7, 7, 7]]
    assert not first.exists()  # the stale cache is gone


def test_non_finite_rows_are_named_and_leave_no_cache(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    values = np.array([[1, 2], [np.nan, 0], [3, 4]], dtype=np.float32)
    feature = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 2)
    pq.write_table(pa.table({"image_id": ["a", "b", "c"], "feature": feature}), path)
    with pytest.raises(ValueError, match="bad.parquet: feature row 1 holds NaN or Inf"):
        feature_rows(path)
    assert not list((tmp_path / ".cache").glob("*.npy"))
