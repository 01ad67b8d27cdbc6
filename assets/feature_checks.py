"""Blocking checks on feature files: a failure stops training on broken features."""

import dagster as dg
import pandas as pd

from assets.data_checks import outcome_result
from assets.resources import TwobranchStorage
from ops.dataset_store import load_dataset_table
from ops.feature_checks import check_feature_file


@dg.asset_check(asset="image_features", blocking=True)
def image_features_valid(image_features: dict, storage: TwobranchStorage) -> dg.AssetCheckResult:
    """No NaN/Inf, the backbone's dimension, one row per valid image."""
    images = load_dataset_table(storage.root, image_features["dataset"], "images")
    return outcome_result(
        check_feature_file(image_features["path"], "image_id", len(images), image_features["dim"])
    )


@dg.asset_check(asset="text_features", blocking=True)
def text_features_valid(text_features: dict, storage: TwobranchStorage) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per caption."""
    captions = load_dataset_table(storage.root, text_features["dataset"], "captions")
    return outcome_result(
        check_feature_file(text_features["path"], "caption_id", len(captions), text_features["dim"])
    )


@dg.asset_check(asset="phrase_features", blocking=True)
def phrase_features_valid(phrase_features: dict, storage: TwobranchStorage) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per phrase."""
    phrases = load_dataset_table(storage.root, phrase_features["dataset"], "phrases")
    return outcome_result(
        check_feature_file(
            phrase_features["path"], "phrase_id", len(phrases), phrase_features["dim"]
        )
    )


@dg.asset_check(
    asset="region_features", blocking=True, additional_ins={"region_proposals": dg.AssetIn()}
)
def region_features_valid(region_features: dict, region_proposals: dict) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per proposal."""
    proposals = pd.read_parquet(region_proposals["path"], columns=["region_id"])
    return outcome_result(
        check_feature_file(
            region_features["path"], "region_id", len(proposals), region_features["dim"]
        )
    )


FEATURE_CHECKS = [
    image_features_valid,
    text_features_valid,
    phrase_features_valid,
    region_features_valid,
]
