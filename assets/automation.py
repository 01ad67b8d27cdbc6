"""Jobs, the retraining schedule, and the sensor that retrains when a dataset changes.

Every job is partitioned by dataset; the schedule and the sensor request one run per
dataset. Which datasets they act on: ``TWOBRANCH_AUTOMATION_DATASETS`` (comma-separated
registered names; unset or ``all``: every registered dataset), read at each evaluation.
"""

import json
import os

import dagster as dg

from assets.deployment import DEFAULT_RETRAIN_CRON
from assets.partitions import DATASETS

DATA_GROUP_ASSETS = ["raw_dataset", "images", "captions", "phrases"]
AUTOMATION_DATASETS_ENV = "TWOBRANCH_AUTOMATION_DATASETS"

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Every asset of one dataset (the run's partition), from the raw dataset to "
    "the report.",
)

retrain = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("training", "evaluation", "search"),
    description="Train the four networks on the current features, evaluate them, write the "
    "report, rebuild the search index; a new model becomes champion only if it beats the "
    "current one on validation.",
)

refresh_from_data = dg.define_asset_job(
    "refresh_from_data",
    selection=dg.AssetSelection.assets(*DATA_GROUP_ASSETS).downstream()
    - dg.AssetSelection.assets(*DATA_GROUP_ASSETS),
    description="Features, graph, training, evaluation and report for a changed dataset.",
)


def automated_datasets(instance: dg.DagsterInstance) -> list[str]:
    """The registered datasets the schedule and sensor act on, in name order."""
    registered = sorted(instance.get_dynamic_partitions(DATASETS.name))
    chosen = os.environ.get(AUTOMATION_DATASETS_ENV, "").strip()
    if not chosen or chosen == "all":
        return registered
    wanted = {name.strip() for name in chosen.split(",") if name.strip()}
    return [name for name in registered if name in wanted]


def build_retrain_schedule(cron: str = DEFAULT_RETRAIN_CRON) -> dg.ScheduleDefinition:
    """The retraining schedule on ``cron`` (UTC)."""

    @dg.schedule(
        job=retrain,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def retrain_weekly(context: dg.ScheduleEvaluationContext):
        """Weekly retraining of each dataset (cron from TWOBRANCH_RETRAIN_CRON). Off until
        switched on in the UI, so a fresh install never starts training by itself."""
        tick = context.scheduled_execution_time.isoformat()
        datasets = automated_datasets(context.instance)
        if not datasets:
            return dg.SkipReason("no registered dataset to retrain")
        return [
            dg.RunRequest(
                run_key=f"{name}-{tick}",
                partition_key=name,
                tags={"twobranch/trigger": "schedule"},
            )
            for name in datasets
        ]

    return retrain_weekly


def _latest_fingerprint(instance: dg.DagsterInstance, dataset: str) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("captions"), asset_partitions=[dataset]),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("data_fingerprint")
    return None if value is None else str(value.value)


@dg.sensor(
    job=refresh_from_data,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def retrain_on_new_data(context: dg.SensorEvaluationContext):
    """Launches ``refresh_from_data`` for a dataset (features → training → evaluation) when
    its ``captions`` partition is materialized with data whose fingerprint differs from the
    one seen last. A dataset's first materialization is only recorded."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests, notes = [], []
    for dataset in automated_datasets(context.instance):
        fingerprint = _latest_fingerprint(context.instance, dataset)
        if fingerprint is None:
            notes.append(f"{dataset}: not materialized yet")
        elif dataset not in seen:
            notes.append(f"{dataset}: recorded ({fingerprint[:12]})")
        elif seen[dataset] == fingerprint:
            notes.append(f"{dataset}: not changed")
        else:
            requests.append(
                dg.RunRequest(
                    run_key=f"{dataset}-data-{fingerprint[:16]}",
                    partition_key=dataset,
                    tags={"twobranch/trigger": "new-data", "twobranch/data": fingerprint[:16]},
                )
            )
        if fingerprint is not None:
            seen[dataset] = fingerprint
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if requests:
        return requests
    return dg.SkipReason("; ".join(notes) or "no registered dataset")


JOBS = [full_pipeline, retrain, refresh_from_data]
SENSORS = [retrain_on_new_data]
