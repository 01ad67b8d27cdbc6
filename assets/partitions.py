"""Datasets as Dagster partitions: every dataset-dependent asset is partitioned by the
registered dataset name, so several datasets keep their own materializations side by side.

The registry (``ops.data.registry``, a file in the data root) is the source of truth;
the instance's dynamic partitions mirror it (``sync_dataset_partitions``), which
``twobranch dataset add/remove/sync`` and ``make run`` do.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from ops.data.registry import DEFAULT_DATASET

DATASETS = dg.DynamicPartitionsDefinition(name="datasets")
PARTITION_TAG = "dagster/partition"


def dataset_of(context: dg.OpExecutionContext | dg.AssetExecutionContext) -> str:
    """The run's dataset: its partition key."""
    return context.partition_key


def check_dataset(context: dg.AssetCheckExecutionContext) -> str:
    """The dataset an asset check runs for: its run's partition key."""
    return context.op_execution_context.partition_key


def sync_dataset_partitions(instance: dg.DagsterInstance, names: Iterable[str]) -> list[str]:
    """Make the instance's dataset partitions exactly ``names`` (plus the built-in default);
    returns the names added. Materialization history of a removed dataset stays in the
    instance; only its partition key goes."""
    wanted = set(names) | {DEFAULT_DATASET}
    present = set(instance.get_dynamic_partitions(DATASETS.name))
    added = sorted(wanted - present)
    if added:
        instance.add_dynamic_partitions(DATASETS.name, added)
    for stale in sorted(present - wanted):
        instance.delete_dynamic_partition(DATASETS.name, stale)
    return added


def load_partition_output(context: dg.AssetCheckExecutionContext, asset: str) -> dict:
    """The stored output (manifest) of ``asset`` for the check's dataset partition.

    An asset check is not partitioned itself: given the asset as an input, Dagster would load
    every partition's output. This loads the one this run materialized."""
    step = context.op_execution_context
    input_context = dg.build_input_context(
        asset_key=dg.AssetKey(asset),
        partition_key=step.partition_key,
        asset_partitions_def=DATASETS,
        instance=step.instance,
    )
    return context.resources.io_manager.load_input(input_context)
