"""Shards as separate steps: the multiprocess executor runs each shard in its own process,
step outputs pass through the shared ``TWOBRANCH_IO_DIR`` (as pods on a cluster do through
the shared volume), and re-executing a failed run redoes only the failed shard."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import dagster as dg
import pytest

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.deployment import io_manager_from_env
from assets.partitions import PARTITION_TAG, sync_dataset_partitions
from assets.resources import ComputeSettings, TwobranchStorage
from ops.data.dataset_store import load_dataset_table
from ops.handoffs import ImageFeatureFile, ShardResult
from ops.storage.parquet_io import read_features
from ops.storage.paths import features_path
from tests.pipeline_helpers import SMALL_SYNTHETIC
from tests.sharded_jobs import sharded_image_features_job, sharded_image_features_job_in_process

DATA = ["raw_dataset", "images", "captions", "phrases"]
SYNTHETIC_PARTITION = {PARTITION_TAG: "synthetic"}


def test_shard_steps_run_in_separate_processes_through_the_shared_io_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, io_dir = tmp_path / "data", tmp_path / "shared_io"
    monkeypatch.setenv("TWOBRANCH_IO_DIR", str(io_dir))
    resources = {
        "storage": TwobranchStorage(data_root=str(root)),
        "compute": ComputeSettings(device="cpu", num_workers=0),
        **io_manager_from_env(),
    }
    with dg.instance_for_test() as instance:
        sync_dataset_partitions(instance, [])
        upstream = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=dg.AssetSelection.assets(*DATA),
            run_config={"ops": {"raw_dataset": {"config": SMALL_SYNTHETIC}}},
            resources=resources,
            instance=instance,
            partition_key="synthetic",
        )
        assert upstream.success
        features = {"backbone": "squeezenet1_1", "image_size": 32, "batch_size": 8, "shards": 2}
        result = dg.execute_job(
            dg.reconstructable(sharded_image_features_job),
            instance=instance,
            tags=SYNTHETIC_PARTITION,
            run_config={
                "ops": {"image_features": {"config": features}},
                "resources": {"storage": {"config": {"data_root": str(root)}}},
            },
        )
        assert result.success
        shard_pids = {
            event.step_key: event.pid
            for event in result.all_events
            if event.is_step_success and "_shard[" in (event.step_key or "")
        }
        assert len(shard_pids) == 2
        assert len(set(shard_pids.values())) == 2 and os.getpid() not in shard_pids.values()
    # The asset's output and every shard step's output went through the shared folder.
    manifest = pickle.loads((io_dir / "image_features" / "synthetic").read_bytes())
    run_folder = io_dir / result.run_id
    shard_outputs = sorted(p.parent.name for p in run_folder.glob("*_shard[[]*]/result"))
    assert shard_outputs == [
        "image_features.image_features_shard[shard_000_of_002]",
        "image_features.image_features_shard[shard_001_of_002]",
    ]
    assert isinstance(manifest, ImageFeatureFile) and manifest.feature_dtype == "float32"
    shard = pickle.loads(next(run_folder.glob("*_shard[[]*]/result")).read_bytes())
    assert isinstance(shard, ShardResult) and (shard.shard.index, shard.shard.count) == (0, 2)
    ids, matrix = read_features(manifest.path)
    assert len(ids) == manifest.rows == 84 and matrix.shape == (84, 512)
    assert ids["image_id"].is_unique


def test_reexecution_from_failure_redoes_only_the_failed_shard(tmp_path: Path) -> None:
    root = tmp_path / "data"
    resources = {
        "storage": TwobranchStorage(data_root=str(root)),
        "compute": ComputeSettings(device="cpu", num_workers=0),
    }
    run_config = {
        "ops": {
            "image_features": {
                "config": {"backbone": "squeezenet1_1", "image_size": 32, "shards": 2}
            }
        },
        "resources": {"storage": {"config": {"data_root": str(root)}}},
    }
    job = dg.reconstructable(sharded_image_features_job_in_process)
    with dg.instance_for_test() as instance:
        sync_dataset_partitions(instance, [])
        assert dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=dg.AssetSelection.assets(*DATA),
            run_config={"ops": {"raw_dataset": {"config": SMALL_SYNTHETIC}}},
            resources=resources,
            instance=instance,
            partition_key="synthetic",
        ).success
        images = load_dataset_table(root, "synthetic", "images")
        victim = Path(images["path"].iloc[60])  # in the second shard (rows 42..83)
        original = victim.read_bytes()
        victim.write_bytes(b"not an image any more")  # e.g. a storage hiccup
        first = dg.execute_job(
            job, instance=instance, run_config=run_config, tags=SYNTHETIC_PARTITION
        )
        assert not first.success
        failed = {e.step_key for e in first.all_events if e.is_step_failure}
        assert failed == {"image_features.image_features_shard[shard_001_of_002]"}
        victim.write_bytes(original)
        second = dg.execute_job(
            job,
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
            # The UI's re-execution keeps the parent's tags, the partition among them; this
            # Python API takes them as given.
            tags=SYNTHETIC_PARTITION,
        )
        assert second.success
        ran = {e.step_key for e in second.all_events if e.is_step_success}
    assert ran == {
        "image_features.image_features_shard[shard_001_of_002]",
        "image_features.image_features_merge",
        "image_features_image_features_valid",  # the asset's check
    }
    ids, _ = read_features(features_path(root, "synthetic", "image", "squeezenet1_1_32"))
    assert ids["image_id"].tolist() == images["image_id"].tolist()
    assert not list(root.rglob(".shards"))
