"""Jobs over the real assets for tests that run them with ``dg.execute_job`` (separate
processes, re-execution), which needs module-level functions (``dg.reconstructable``)."""

import dagster as dg

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.deployment import io_manager_from_env
from assets.resources import ComputeSettings, TwobranchStorage

SHARDED_FEATURES_JOB = "sharded_image_features"


def sharded_image_features_job() -> dg.JobDefinition:
    """``image_features`` alone, its shard steps each in its own process, two at a time."""
    return _image_features_job(dg.multiprocess_executor.configured({"max_concurrent": 2}))


def sharded_image_features_job_in_process() -> dg.JobDefinition:
    """``image_features`` alone, every step in this process."""
    return _image_features_job(dg.in_process_executor)


def _image_features_job(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    job = dg.define_asset_job(
        SHARDED_FEATURES_JOB,
        selection=dg.AssetSelection.assets("image_features"),
        executor_def=executor,
    )
    definitions = dg.Definitions(
        assets=[*ALL_ASSETS],
        asset_checks=[*ALL_CHECKS],
        jobs=[job],
        resources={
            "storage": TwobranchStorage(),
            "compute": ComputeSettings(device="cpu", num_workers=0),
            **io_manager_from_env(),
        },
    )
    return definitions.resolve_job_def(SHARDED_FEATURES_JOB)
