"""Dagster side of sharded extraction: one dynamic step per shard, then one merge step.

A sharded asset is a graph of three ops: ``<asset>_plan`` emits one ``FeatureShard`` per shard
as a dynamic output, ``<asset>_shard`` runs once per shard (in parallel processes with the
multiprocess executor, in parallel pods with the Kubernetes executor), and ``<asset>_merge``
joins the shards' files into the asset's file. All three read the asset's one config block
(``ops: <asset>: config: ...``), so sharding changes no run config.
"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pandas as pd

from assets.metadata import feature_preview, preview
from ops.features.shards import (
    ShardSpec,
    merge_shard_files,
    plan_shards,
    remove_abandoned_shards,
)
from ops.handoffs import CnnFeatureFile, FeatureShard, RegionShard, ShardResult, Skipped
from ops.storage.parquet_io import FeatureDtype

F = TypeVar("F", bound=CnnFeatureFile)


def shard_outputs(
    total: int, count: int, dataset: str, proposals: str | None = None
) -> Iterator[dg.DynamicOutput]:
    """One dynamic output per shard of ``total`` items of ``dataset``: a ``FeatureShard``, or
    a ``RegionShard`` of the ``proposals`` file's images."""
    for spec in plan_shards(total, count):
        shard = (
            FeatureShard(dataset=dataset, **spec.as_dict())
            if proposals is None
            else RegionShard(dataset=dataset, proposals=proposals, **spec.as_dict())
        )
        yield dg.DynamicOutput(shard, mapping_key=spec.key)


def skipped_shard(dataset: str, reason: str) -> dg.DynamicOutput:
    """The one step of a sharded asset whose input was skipped: it carries the reason on."""
    return dg.DynamicOutput(Skipped(dataset=dataset, reason=reason), mapping_key="skipped")


def shard_spec(shard: FeatureShard, total: int) -> ShardSpec:
    """The shard's spec, after checking that the items it was planned on are still ``total``
    (the table changed between planning and extraction: the ranges would be wrong)."""
    spec = ShardSpec.from_dict(shard.model_dump())
    if spec.total != total:
        raise dg.Failure(
            f"{spec.key} was planned on {spec.total} items but {total} are there now; "
            "the input changed during the run — run the asset again"
        )
    return spec


def in_shard_order(shards: list[ShardResult]) -> list[ShardResult]:
    """Collected shard results, ordered by shard index (collection order is not guaranteed)."""
    ordered = sorted(shards, key=lambda result: result.shard.index)
    indexes = [result.shard.index for result in ordered]
    count = ordered[0].shard.count if ordered else 0
    if indexes != list(range(count)):
        raise ValueError(f"expected shards 0..{count - 1}, got {indexes}")
    return ordered


def same_config_for_ops(values: dg.Config, *op_names: str) -> dict:
    """Op config for a graph whose ops all take the asset's config."""
    config = values.model_dump()
    return {name: {"config": config} for name in op_names}


def shard_table(shards: list[ShardResult]) -> dg.MetadataValue:
    """Per-shard rows and seconds, as a table in the asset's metadata."""
    frame = pd.DataFrame(
        [
            {
                "index": result.shard.index,
                "start": result.shard.start,
                "stop": result.shard.stop,
                "rows": result.rows,
                "seconds": result.seconds,
            }
            for result in shards
        ]
    )
    return preview(frame.round({"seconds": 2}), rows=len(frame))


def shard_result(
    shard: FeatureShard, path: Path, rows: int, seconds: float, **extra: object
) -> ShardResult:
    """What a shard step hands to the merge step: its shard, its file, rows and seconds."""
    return ShardResult(shard=shard, path=str(path), rows=int(rows), seconds=seconds, **extra)


def merged_features(
    shards: list[ShardResult],
    path: Path,
    variant: str,
    handoff: type[F],
    feature_dtype: FeatureDtype = "float32",
    **extra_metadata: object,
) -> dg.Output[F]:
    """Join feature shards into ``path``, stored as ``feature_dtype``; the ``handoff``
    downstream assets read, with metadata."""
    shards = in_shard_order(shards)
    started = time.perf_counter()
    rows = merge_shard_files([result.path for result in shards], path, dtype=feature_dtype)
    abandoned = remove_abandoned_shards(path)
    dim = shards[0].dim
    if dim is None:
        raise ValueError(f"{shards[0].path}: its shard step reported no feature dimension")
    extract_seconds = sum(result.seconds for result in shards)
    manifest = handoff(
        dataset=shards[0].shard.dataset,
        path=str(path),
        rows=rows,
        dim=dim,
        variant=variant,
        feature_dtype=feature_dtype,
    )
    return dg.Output(
        manifest,
        metadata={
            "rows": rows,
            "dim": dim,
            "feature_dtype": feature_dtype,
            "bytes_on_disk": path.stat().st_size,
            "path": dg.MetadataValue.path(str(path)),
            "shards": len(shards),
            "shard_table": shard_table(shards),
            "preview": feature_preview(str(path)),
            "seconds": round(extract_seconds, 2),
            "merge_seconds": round(time.perf_counter() - started, 2),
            "abandoned_shard_folders_removed": abandoned,
            "rows_per_second": round(rows / extract_seconds, 1) if extract_seconds else 0.0,
            **extra_metadata,
        },
    )
