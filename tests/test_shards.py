"""Sharded extraction: shards cover the items exactly, and merged shards equal one pass."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.sharding import shard_spec
from ops.features.image_features import extract_image_features
from ops.features.region_features import extract_region_features
from ops.features.settings import ImageFeatureSettings, RegionFeatureSettings
from ops.features.shards import (
    merge_shard_files,
    plan_shards,
    remove_abandoned_shards,
    shard_file,
)
from ops.handoffs import FeatureShard
from ops.storage.parquet_io import (
    FeatureWriter,
    head_features,
    read_features,
    read_table,
    write_table,
)
from tests.region_images import make_images, make_proposals


@pytest.mark.parametrize(("total", "count"), [(10, 3), (7, 7), (3, 8), (100, 1), (0, 4)])
def test_shards_cover_every_item_once_in_order(total: int, count: int) -> None:
    shards = plan_shards(total, count)
    covered = [i for shard in shards for i in range(shard.start, shard.stop)]
    assert covered == list(range(total))
    assert len(shards) == max(1, min(count, total))
    sizes = [shard.rows for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    assert [shard.index for shard in shards] == list(range(len(shards)))
    assert len({shard.key for shard in shards}) == len(shards)


def test_invalid_shard_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards(10, 0)


def test_shard_files_are_per_run_beside_the_final_file(tmp_path: Path) -> None:
    spec = plan_shards(10, 2)[1]
    path = shard_file(tmp_path / "features" / "image_resnet18.parquet", spec, "run/1 2")
    assert path == tmp_path / "features/.shards/image_resnet18/run_1_2/shard_001_of_002.parquet"


def _write(path: Path, ids: list[str], dim: int = 3, kind: str = "image") -> None:
    matrix = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim)
    with FeatureWriter(path, {"image_id": pa.string()}, dim, {"kind": kind}) as writer:
        writer.write({"image_id": ids}, matrix)


def test_merge_joins_in_the_given_order_and_removes_the_shards(tmp_path: Path) -> None:
    parts = [tmp_path / ".shards/x/run/a.parquet", tmp_path / ".shards/x/run/b.parquet"]
    _write(parts[0], ["i0", "i1"])
    _write(parts[1], ["i2"])
    out = tmp_path / "x.parquet"
    assert merge_shard_files(parts, out) == 3
    ids, matrix = read_features(out)
    assert ids["image_id"].tolist() == ["i0", "i1", "i2"]
    assert matrix[2].tolist() == [0.0, 1.0, 2.0]  # first row of the second shard
    assert pq.read_schema(out).metadata[b"kind"] == b"image"
    assert not (tmp_path / ".shards").exists()


def test_merge_refuses_mismatched_shards_and_keeps_the_old_file(tmp_path: Path) -> None:
    good, other = tmp_path / "s0.parquet", tmp_path / "s1.parquet"
    _write(good, ["i0"])
    _write(other, ["i1"], dim=4)
    out = tmp_path / "x.parquet"
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match="s1.parquet: schema differs"):
        merge_shard_files([good, other], out)
    assert out.read_bytes() == b"previous"
    assert good.exists() and other.exists()
    with pytest.raises(FileNotFoundError, match="missing"):
        merge_shard_files([good, tmp_path / "gone.parquet"], out)


def test_sharded_image_features_equal_one_pass(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    images = make_images(folder)
    settings = ImageFeatureSettings(backbone="squeezenet1_1", image_size=32, batch_size=2)
    whole = tmp_path / "whole.parquet"
    extract_image_features(images, whole, settings, num_workers=0, device="cpu")
    parts = []
    for spec in plan_shards(len(images), 2):
        parts.append(shard_file(tmp_path / "merged.parquet", spec, "run"))
        extract_image_features(
            images.iloc[spec.start : spec.stop], parts[-1], settings, num_workers=0, device="cpu"
        )
    merge_shard_files(parts, tmp_path / "merged.parquet")
    whole_ids, whole_matrix = read_features(whole)
    merged_ids, merged_matrix = read_features(tmp_path / "merged.parquet")
    assert merged_ids.equals(whole_ids)
    np.testing.assert_allclose(
        merged_matrix, whole_matrix, rtol=1e-4, atol=1e-5
    )  # batch makeup shifts conv rounding
    assert pq.read_schema(whole).metadata == pq.read_schema(tmp_path / "merged.parquet").metadata


def test_sharded_region_features_equal_one_pass(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    images = make_images(folder)
    proposals_path = tmp_path / "proposals.parquet"
    write_table(proposals_path, make_proposals(images))
    settings = RegionFeatureSettings(backbone="squeezenet1_1", image_size=32, batch_size=2)
    options = {"num_workers": 0, "device": "cpu"}
    whole = tmp_path / "whole.parquet"
    extract_region_features(images, proposals_path, whole, settings, **options)
    parts = []
    for spec in plan_shards(len(images), 3):
        parts.append(shard_file(tmp_path / "merged.parquet", spec, "run"))
        stats = extract_region_features(
            images,
            proposals_path,
            parts[-1],
            settings,
            image_range=(spec.start, spec.stop),
            **options,
        )
        assert stats.images == spec.rows
    merge_shard_files(parts, tmp_path / "merged.parquet")
    whole_ids, whole_matrix = read_features(whole)
    merged_ids, merged_matrix = read_features(tmp_path / "merged.parquet")
    assert merged_ids.equals(whole_ids)
    assert merged_ids["region_id"].tolist() == read_table(proposals_path)["region_id"].tolist()
    np.testing.assert_allclose(
        merged_matrix, whole_matrix, rtol=1e-4, atol=1e-5
    )  # batch makeup shifts conv rounding
    with pytest.raises(ValueError, match="outside the 3 images"):
        extract_region_features(
            images,
            proposals_path,
            tmp_path / "bad.parquet",
            settings,
            image_range=(2, 5),
            **options,
        )


def test_head_features_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    _write(path, [f"i{k}" for k in range(10)])
    ids, matrix = head_features(path, rows=3)
    assert ids["image_id"].tolist() == ["i0", "i1", "i2"]
    assert matrix.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    empty = tmp_path / "empty.parquet"
    with FeatureWriter(empty, {"image_id": pa.string()}, 3):
        pass
    ids, matrix = head_features(empty)
    assert list(ids.columns) == ["image_id"] and matrix.shape == (0, 3)


def test_abandoned_shard_folders_are_removed_after_a_day_only(tmp_path: Path) -> None:
    final = tmp_path / "features" / "image_x.parquet"
    spec = plan_shards(4, 2)[0]
    old, recent = shard_file(final, spec, "failed-run"), shard_file(final, spec, "running")
    for path in (old, recent):
        _write(path, ["i0"])
    day_ago = time.time() - 25 * 3600
    for path in (old, old.parent):
        os.utime(path, (day_ago, day_ago))
    assert remove_abandoned_shards(final) == 1
    assert not old.parent.exists() and recent.exists()
    assert remove_abandoned_shards(final) == 0


def test_a_shard_refuses_to_run_when_its_input_changed_since_planning() -> None:
    planned = FeatureShard(dataset="toy", **plan_shards(10, 2)[1].as_dict())
    assert shard_spec(planned, 10).start == 5
    with pytest.raises(dg.Failure, match="planned on 10 items but 9 are there now"):
        shard_spec(planned, 9)
