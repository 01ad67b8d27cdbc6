"""Dagster side of sharded extraction: one dynamic step per shard, then one merge step.

A sharded asset is a graph of three ops: ``<asset>_plan`` emits one ``ShardSpec`` per shard
as a dynamic output, ``<asset>_shard`` runs once per shard (in parallel processes with the
multiprocess executor, in parallel pods with the Kubernetes executor), and ``<asset>_merge``
joins the shards' files into the asset's file. All three read the asset's one config block
(``ops: <asset>: config: ...``), so sharding changes no run config.
"""

import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.metadata import feature_preview, preview
from assets.skips import skipped_manifest
from ops.features.shards import (
    ShardSpec,
    merge_shard_files,
    plan_shards,
    remove_abandoned_shards,
)
from ops.storage.parquet_io import FeatureDtype


def shard_outputs(total: int, count: int, **context: object) -> Iterator[dg.DynamicOutput]:
    """One dynamic output per shard of ``total`` items: the shard's spec plus ``context``."""
    for spec in plan_shards(total, count):
        yield dg.DynamicOutput({**context, **spec.as_dict()}, mapping_key=spec.key)


def skipped_shard(dataset: str, reason: str) -> dg.DynamicOutput:
    """The one step of a sharded asset whose input was skipped: it carries the reason on."""
    return dg.DynamicOutput(skipped_manifest(dataset, reason), mapping_key="skipped")


def shard_spec(shard: Mapping, total: int) -> ShardSpec:
    """The shard's spec, after checking that the items it was planned on are still ``total``
    (the table changed between planning and extraction: the ranges would be wrong)."""
    spec = ShardSpec.from_dict(dict(shard))
    if spec.total != total:
        raise dg.Failure(
            f"{spec.key} was planned on {spec.total} items but {total} are there now; "
            "the input changed during the run — run the asset again"
        )
    return spec


def in_shard_order(shards: list[dict]) -> list[dict]:
    """Collected shard results, ordered by shard index (collection order is not guaranteed)."""
    ordered = sorted(shards, key=lambda shard: int(shard["index"]))
    indexes = [int(shard["index"]) for shard in ordered]
    count = int(ordered[0]["count"]) if ordered else 0
    if indexes != list(range(count)):
        raise ValueError(f"expected shards 0..{count - 1}, got {indexes}")
    return ordered


def same_config_for_ops(values: dg.Config, *op_names: str) -> dict:
    """Op config for a graph whose ops all take the asset's config."""
    config = values.model_dump()
    return {name: {"config": config} for name in op_names}


def shard_table(shards: list[dict]) -> dg.MetadataValue:
    """Per-shard rows and seconds, as a table in the asset's metadata."""
    columns = ["index", "start", "stop", "rows", "seconds"]
    frame = pd.DataFrame([{name: shard.get(name) for name in columns} for shard in shards])
    return preview(frame.round({"seconds": 2}), rows=len(frame))


def shard_result(shard: Mapping, path: Path, rows: int, seconds: float, **extra: object) -> dict:
    """What a shard step hands to the merge step: its spec, its file, rows and seconds."""
    return {**shard, "path": str(path), "rows": int(rows), "seconds": float(seconds), **extra}


def merged_features(
    shards: list[dict],
    path: Path,
    variant: str,
    feature_dtype: FeatureDtype = "float32",
    **extra_metadata: object,
) -> dg.Output[dict]:
    """Join feature shards into ``path``, stored as ``feature_dtype``; the manifest downstream
    assets read, with metadata."""
    shards = in_shard_order(shards)
    started = time.perf_counter()
    rows = merge_shard_files([shard["path"] for shard in shards], path, dtype=feature_dtype)
    abandoned = remove_abandoned_shards(path)
    dim = int(shards[0]["dim"])
    extract_seconds = sum(float(shard["seconds"]) for shard in shards)
    manifest = {
        "dataset": shards[0]["dataset"],
        "path": str(path),
        "rows": rows,
        "dim": dim,
        "variant": variant,
    }
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
