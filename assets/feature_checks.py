"""Blocking checks on feature files: a failure stops training on broken features."""

import dagster as dg

from assets.data_checks import outcome_result
from assets.partitions import check_dataset, load_partition_output, load_skippable_output
from assets.skips import skipped_check
from ops.data.dataset_store import load_dataset_table
from ops.features.checks import check_feature_file
from ops.handoffs import (
    FeatureFile,
    ImageFeatureFile,
    PhraseFeatureFile,
    RegionFeatureFile,
    RegionProposalFile,
    Skipped,
    TextFeatureFile,
)
from ops.storage.parquet_io import read_table

# The manifest comes through the IO manager (see load_partition_output).
CHECK_RESOURCES = {"io_manager", "storage"}


def _feature_check(
    context: dg.AssetCheckExecutionContext,
    asset: str,
    handoff: type[FeatureFile],
    table: str,
    id_column: str,
) -> dg.AssetCheckResult:
    features = load_skippable_output(context, asset, handoff)
    if isinstance(features, Skipped):
        return skipped_check(features.reason)
    rows = load_dataset_table(context.resources.storage.root, check_dataset(context), table)
    return outcome_result(check_feature_file(features.path, id_column, len(rows), features.dim))


@dg.asset_check(asset="image_features", blocking=True, required_resource_keys=CHECK_RESOURCES)
def image_features_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """No NaN/Inf, the backbone's dimension, one row per valid image."""
    return _feature_check(context, "image_features", ImageFeatureFile, "images", "image_id")


@dg.asset_check(asset="text_features", blocking=True, required_resource_keys=CHECK_RESOURCES)
def text_features_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per caption."""
    return _feature_check(context, "text_features", TextFeatureFile, "captions", "caption_id")


@dg.asset_check(asset="phrase_features", blocking=True, required_resource_keys=CHECK_RESOURCES)
def phrase_features_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per phrase."""
    return _feature_check(context, "phrase_features", PhraseFeatureFile, "phrases", "phrase_id")


@dg.asset_check(asset="region_features", blocking=True, required_resource_keys=CHECK_RESOURCES)
def region_features_valid(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """No NaN/Inf, the configured dimension, one row per proposal."""
    region_features = load_skippable_output(context, "region_features", RegionFeatureFile)
    if isinstance(region_features, Skipped):
        return skipped_check(region_features.reason)
    region_proposals = load_partition_output(context, "region_proposals", RegionProposalFile)
    proposals = read_table(region_proposals.path, ["region_id"])
    return outcome_result(
        check_feature_file(region_features.path, "region_id", len(proposals), region_features.dim)
    )


FEATURE_CHECKS = [
    image_features_valid,
    text_features_valid,
    phrase_features_valid,
    region_features_valid,
]
