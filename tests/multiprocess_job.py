"""A job over the real assets with the multiprocess executor, for tests that need steps in
separate processes (``dg.reconstructable`` needs a module-level function)."""

import dagster as dg

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.deployment import io_manager_from_env
from assets.resources import ComputeSettings, TwobranchStorage

SHARDED_FEATURES_JOB = "sharded_image_features"


def sharded_image_features_job() -> dg.JobDefinition:
    """``image_features`` alone, its shard steps each in its own process, two at a time."""
    job = dg.define_asset_job(
        SHARDED_FEATURES_JOB,
        selection=dg.AssetSelection.assets("image_features"),
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": 2}),
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
