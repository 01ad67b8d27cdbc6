"""The Dagster code location of twobranch: every asset, check, job, schedule and sensor."""

import dagster as dg

from assets.automation import JOBS, SENSORS, build_retrain_schedule
from assets.data import dataset_tables, raw_dataset
from assets.data_checks import DATA_CHECKS
from assets.deployment import executor_from_env, io_manager_from_env, retrain_cron_from_env
from assets.evaluation import EVALUATION_ASSETS
from assets.evaluation_checks import EVALUATION_CHECKS
from assets.feature_checks import FEATURE_CHECKS
from assets.features import image_features, phrase_features, text_features, word_vectors
from assets.graph import neighborhood_graph
from assets.regions import region_features, region_proposals
from assets.report import report
from assets.resources import ComputeSettings, TwobranchStorage
from assets.search import retrieval_index
from assets.training import TRAINING_ASSETS

ALL_ASSETS = [
    raw_dataset,
    dataset_tables,
    image_features,
    region_proposals,
    region_features,
    word_vectors,
    text_features,
    phrase_features,
    neighborhood_graph,
    *TRAINING_ASSETS,
    *EVALUATION_ASSETS,
    report,
    retrieval_index,
]
ALL_CHECKS = [*DATA_CHECKS, *FEATURE_CHECKS, *EVALUATION_CHECKS]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=JOBS,
    schedules=[build_retrain_schedule(retrain_cron_from_env())],
    sensors=SENSORS,
    resources={
        "storage": TwobranchStorage(),
        "compute": ComputeSettings(),
        **io_manager_from_env(),
    },
    executor=executor_from_env(),
)
