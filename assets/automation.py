"""Jobs, the retraining schedule, and the sensor that retrains when the dataset changes."""

import os

import dagster as dg

DATA_GROUP_ASSETS = ["raw_dataset", "images", "captions", "phrases"]
RETRAIN_CRON = os.environ.get("TWOBRANCH_RETRAIN_CRON", "0 3 * * 1")  # Mondays 03:00

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all(),
    description="Every asset, from the raw dataset to the report.",
)

retrain = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("training", "evaluation"),
    description="Train the four networks on the current features, evaluate them, write the "
    "report; a new model becomes champion only if it beats the current one on validation.",
)

refresh_from_data = dg.define_asset_job(
    "refresh_from_data",
    selection=dg.AssetSelection.assets(*DATA_GROUP_ASSETS).downstream()
    - dg.AssetSelection.assets(*DATA_GROUP_ASSETS),
    description="Features, graph, training, evaluation and report for a changed dataset.",
)

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_weekly",
    job=retrain,
    cron_schedule=RETRAIN_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly retraining (cron from TWOBRANCH_RETRAIN_CRON). Off until switched on "
    "in the UI, so a fresh install never starts training by itself.",
)


@dg.sensor(
    job=refresh_from_data,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def retrain_on_new_data(context: dg.SensorEvaluationContext):
    """Launches ``refresh_from_data`` (features → training → evaluation) when the
    ``captions`` asset is materialized with data whose fingerprint differs from the one seen
    last. The first evaluation only records the current fingerprint."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("captions"))
    if event is None or event.asset_materialization is None:
        return dg.SkipReason("the dataset has not been materialized yet")
    fingerprint_value = event.asset_materialization.metadata.get("data_fingerprint")
    if fingerprint_value is None:
        return dg.SkipReason("the latest captions materialization has no data fingerprint")
    fingerprint = str(fingerprint_value.value)
    if context.cursor is None:
        context.update_cursor(fingerprint)
        return dg.SkipReason(f"recorded the current dataset ({fingerprint[:12]})")
    if fingerprint == context.cursor:
        return dg.SkipReason("the dataset has not changed")
    context.update_cursor(fingerprint)
    return dg.RunRequest(
        run_key=f"data-{fingerprint[:16]}",
        tags={"twobranch/trigger": "new-data", "twobranch/data": fingerprint[:16]},
    )


JOBS = [full_pipeline, retrain, refresh_from_data]
SCHEDULES = [retrain_schedule]
SENSORS = [retrain_on_new_data]
