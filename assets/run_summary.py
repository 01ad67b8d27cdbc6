"""``twobranch summary``: for each dataset, its latest pipeline run's seconds per asset (from
the run's own step timings in the Dagster instance) and the dataset's headline results.

Everything comes from the instance and the results database; the asset definitions (and
torch with them) are not loaded."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ops.report.run_summary import StepTiming, format_timings, headline_results, seconds_per_asset
from ops.storage.sql import format_frame

PARTITION_TAG = "dagster/partition"


def latest_pipeline_runs(
    instance: dg.DagsterInstance, job_name: str | None = None
) -> dict[str, dg.DagsterRun]:
    """The newest run per dataset partition (of ``job_name``, or of any job: ``full_pipeline``,
    a retrain, a UI materialization), by dataset name."""
    latest: dict[str, dg.DagsterRun] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(job_name=job_name)):  # newest first
        dataset = run.tags.get(PARTITION_TAG)
        if dataset and dataset not in latest:
            latest[dataset] = run
    return latest


def check_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[str]:
    """The run's steps that only evaluate asset checks, from the run's own execution plan."""
    if run.execution_plan_snapshot_id is None:
        return frozenset()
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return frozenset(
        step.key
        for step in plan.steps
        if step.outputs
        and all(
            output.properties is not None and output.properties.asset_check_key is not None
            for output in step.outputs
        )
    )


def step_timings(instance: dg.DagsterInstance, run_id: str) -> list[StepTiming]:
    timings = []
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is None:
            continue
        end = stats.end_time if stats.end_time is not None else stats.start_time
        status = stats.status.value if stats.status is not None else "IN_PROGRESS"
        timings.append(StepTiming(stats.step_key, status, end - stats.start_time))
    return timings


def run_wall_seconds(instance: dg.DagsterInstance, run_id: str) -> float | None:
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.start_time is None or record.end_time is None:
        return None
    return record.end_time - record.start_time


def print_run_summaries(
    instance: dg.DagsterInstance, root: Path, datasets: list[str] | None = None
) -> int:
    """Prints a section per dataset; returns how many datasets had a run."""
    runs = latest_pipeline_runs(instance)
    shown = 0
    for dataset, run in sorted(runs.items()):
        if datasets and dataset not in datasets:
            continue
        shown += 1
        print(f"\n== {dataset}: run {run.run_id} ({run.status.value.lower()}) ==")
        table = seconds_per_asset(step_timings(instance, run.run_id), check_steps(instance, run))
        print(format_timings(table, run_wall_seconds(instance, run.run_id)))
        retrieval, localization = headline_results(root, dataset)
        if len(retrieval):
            print("\nImage-sentence retrieval, test split (Recall@K, %):")
            print(format_frame(retrieval.round(1)), end="")
        if len(localization):
            print("\nPhrase localization, test split (accuracy and upper bound, %):")
            print(format_frame(localization.round(1)), end="")
    return shown
