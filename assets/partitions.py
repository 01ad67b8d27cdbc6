"""Datasets as Dagster partitions: every dataset-dependent asset is partitioned by the
registered dataset name, so several datasets keep their own materializations side by side.

The registry (``ops.data.registry``, a file in the data root) is the source of truth;
the instance's dynamic partitions mirror it (``sync_dataset_partitions``), which
``twobranch dataset add/remove/sync`` and ``make run`` do.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any, TypeVar

import dagster as dg

from assets.handoff_types import handoff_type_of
from ops.data.registry import DEFAULT_DATASET
from ops.handoffs import Handoff, Skipped

H = TypeVar("H", bound=Handoff)

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


# A run in one of these states may still write its dataset's files.
UNFINISHED_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def runs_in_progress(instance: dg.DagsterInstance, dataset: str) -> list[str]:
    """The instance's runs of ``dataset``'s partition that have not ended, as
    ``"RUN_ID (job, STATUS)"``. The run storage is where every step of every job is recorded,
    so this sees runs at any stage; a run whose process died without ending it stays here
    (STARTED) until it is terminated in the UI, which errs on the side of keeping files."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=UNFINISHED_RUN_STATUSES, tags={PARTITION_TAG: dataset})
    )
    return [f"{run.run_id} ({run.job_name}, {run.status.value})" for run in runs]


def _load_partition_output(
    context: dg.AssetCheckExecutionContext, asset: str, expected: type | types.UnionType
) -> Any:
    step = context.op_execution_context
    input_context = dg.build_input_context(
        asset_key=dg.AssetKey(asset),
        partition_key=step.partition_key,
        asset_partitions_def=DATASETS,
        instance=step.instance,
    )
    value = context.resources.io_manager.load_input(input_context)
    if problem := handoff_type_of(expected).problem(value):
        raise dg.Failure(f"{asset} of {step.partition_key}: {problem}")
    return value


def load_partition_output(
    context: dg.AssetCheckExecutionContext, asset: str, expected: type[H]
) -> H:
    """The stored hand-off of ``asset`` for the check's dataset partition, checked to be an
    ``expected`` as Dagster checks a step's input.

    An asset check is not partitioned itself: given the asset as an input, Dagster would load
    every partition's output. This loads the one this run materialized."""
    return _load_partition_output(context, asset, expected)


def load_skippable_output(
    context: dg.AssetCheckExecutionContext, asset: str, expected: type[H]
) -> H | Skipped:
    """Like ``load_partition_output``, for an asset that may have been skipped."""
    return _load_partition_output(context, asset, expected | Skipped)
