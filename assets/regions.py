"""Region assets for phrase localization: proposals per image and their CNN features."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.deployment import accelerator_step_tags
from assets.handoff_types import dagster_type, typed_handoffs
from assets.metadata import preview
from assets.partitions import DATASETS
from assets.progress import progress_logger
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.sharding import (
    in_shard_order,
    merged_features,
    same_config_for_ops,
    shard_outputs,
    shard_result,
    shard_spec,
    shard_table,
    skipped_shard,
)
from assets.skips import skipped_output
from ops.data.dataset_store import load_dataset_table
from ops.features.backbones import family_of
from ops.features.fast_rcnn import resolve_region_path
from ops.features.proposals import (
    phrase_task_images,
    propose_regions,
    resolve_method,
)
from ops.features.region_features import (
    extract_region_features,
    proposal_image_order,
    region_variant,
)
from ops.features.settings import ProposalSettings, RegionFeatureSettings, RegionPath
from ops.features.shards import merge_shard_files, remove_abandoned_shards, shard_file
from ops.handoffs import (
    FeatureShard,
    PublishedTables,
    RegionFeatureFile,
    RegionProposalFile,
    RegionShard,
    ShardResult,
    Skipped,
    first_skipped,
)
from ops.metrics.proposal_coverage import proposal_upper_bound
from ops.storage.parquet_io import read_table
from ops.storage.paths import derived_table_file, features_path
from ops.storage.results_store import publish_catalogue

FEATURES_GROUP = "features"


ProposalConfig = dagster_config(ProposalSettings, "ProposalConfig", __name__)


def _extracted(shards: list[ShardResult | Skipped]) -> list[ShardResult]:
    """The shard results of a step none of whose shards was skipped."""
    return [shard for shard in shards if isinstance(shard, ShardResult)]


def _proposal_inputs(
    root, dataset: str, config: ProposalConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(phrases table, images chosen for the phrase task) — the same in every step."""
    phrase_rows = load_dataset_table(root, dataset, "phrases")
    chosen = phrase_task_images(
        load_dataset_table(root, dataset, "images"), phrase_rows, config.max_images_per_split
    )
    return phrase_rows, chosen


@dg.op(out=dg.DynamicOut(dagster_type(FeatureShard | Skipped)))
@typed_handoffs
def region_proposals_plan(
    config: ProposalConfig,
    images: PublishedTables,
    phrases: PublishedTables | Skipped,
    storage: TwobranchStorage,
) -> Iterator[dg.DynamicOutput]:
    """One shard per contiguous range of the images that have boxed phrases."""
    if isinstance(phrases, Skipped):
        yield skipped_shard(images.dataset, phrases.reason)
        return
    _, chosen = _proposal_inputs(storage.root, images.dataset, config)
    yield from shard_outputs(len(chosen), config.shards, images.dataset)


@dg.op
@typed_handoffs
def region_proposals_shard(
    context: dg.OpExecutionContext,
    config: ProposalConfig,
    shard: FeatureShard | Skipped,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> ShardResult | Skipped:
    """Proposals for one shard's images, to that shard's own file."""
    if isinstance(shard, Skipped):
        return shard
    root, dataset = storage.root, shard.dataset
    phrase_rows, chosen = _proposal_inputs(root, dataset, config)
    spec = shard_spec(shard, len(chosen))
    path = shard_file(derived_table_file(root, dataset, "region_proposals"), spec, context.run_id)
    stats = propose_regions(
        chosen.iloc[spec.start : spec.stop],
        path,
        settings_from(config, ProposalSettings),
        num_workers=max(1, compute.workers),
        include_ground_truth_for=phrase_rows[phrase_rows["split"] == "train"],
        progress=progress_logger(context, f"region proposals {spec.key}"),
    )
    return shard_result(shard, path, stats.images, stats.seconds, filled=stats.filled)


@dg.op
@typed_handoffs
def region_proposals_merge(
    config: ProposalConfig, shards: list[ShardResult | Skipped], storage: TwobranchStorage
) -> dg.Output[RegionProposalFile | Skipped]:
    """The shards' proposals joined, in order; reports the proposals' upper bound per split."""
    if skipped := first_skipped(*shards):
        return skipped_output(skipped.dataset, skipped.reason)
    results = in_shard_order(_extracted(shards))
    root, dataset = storage.root, results[0].shard.dataset
    phrase_rows, chosen = _proposal_inputs(root, dataset, config)
    path = derived_table_file(root, dataset, "region_proposals")
    merge_shard_files([result.path for result in results], path)
    remove_abandoned_shards(path)
    publish_catalogue(root)  # the region_proposals view reads the catalogue's snapshot
    proposals = read_table(path)
    bound = proposal_upper_bound(
        phrase_rows[phrase_rows["image_id"].isin(set(chosen["image_id"]))], proposals
    )
    per_image = proposals[proposals["source"] == "proposal"].groupby("image_id").size()
    filled = sum(result.filled for result in results)
    method = resolve_method(config.method, config.edge_model_path)
    return dg.Output(
        RegionProposalFile(dataset=dataset, path=str(path), images=len(chosen), method=method),
        metadata={
            "images": len(chosen),
            "rows": len(proposals),
            "regions": len(proposals),
            "method": method,
            "proposals_per_image": dg.MetadataValue.json(
                {"min": int(per_image.min()), "max": int(per_image.max())} if len(per_image) else {}
            ),
            # Candidates from the fixed sliding-window fill, where the search found too few.
            "filled_per_image_mean": round(filled / max(1, len(per_image)), 2),
            "max_side": config.max_side or "full resolution",
            "whole_image": config.whole_image,
            # No candidate box at all: their phrases are left out of training and evaluation.
            "images_without_regions": int(len(chosen) - proposals["image_id"].nunique()),
            "upper_bound": preview(bound),
            "preview": preview(proposals),
            "shards": len(results),
            "shard_table": shard_table(results),
            "seconds": round(sum(result.seconds for result in results), 2),
        },
    )


@dg.config_mapping
def _region_proposals_config(values: ProposalConfig) -> dict:
    return same_config_for_ops(
        values, "region_proposals_plan", "region_proposals_shard", "region_proposals_merge"
    )


@dg.graph_asset(
    config=_region_proposals_config,
    group_name=FEATURES_GROUP,
    kinds={"opencv", "parquet"},
    partitions_def=DATASETS,
)
@typed_handoffs
def region_proposals(
    images: PublishedTables, phrases: PublishedTables | Skipped
) -> RegionProposalFile | Skipped:
    """Candidate boxes per image (selective search), plus the ground-truth phrase boxes of
    the training split only, searched in ``shards`` parallel steps; reports the proposals'
    upper bound per split."""
    shards = region_proposals_plan(images, phrases).map(region_proposals_shard)
    return region_proposals_merge(shards.collect())


RegionFeatureConfig = dagster_config(RegionFeatureSettings, "RegionFeatureConfig", __name__)


def _region_path(config: RegionFeatureConfig) -> RegionPath:
    return resolve_region_path(family_of(config.backbone), config.region_path)


def _region_feature_file(root, dataset: str, config: RegionFeatureConfig):
    variant = region_variant(settings_from(config, RegionFeatureSettings))
    return variant, features_path(root, dataset, "region", variant)


@dg.op(out=dg.DynamicOut(dagster_type(RegionShard | Skipped)))
@typed_handoffs
def region_features_plan(
    config: RegionFeatureConfig,
    images: PublishedTables,
    region_proposals: RegionProposalFile | Skipped,
) -> Iterator[dg.DynamicOutput]:
    """One shard per contiguous range of the proposals file's images."""
    if isinstance(region_proposals, Skipped):
        yield skipped_shard(images.dataset, region_proposals.reason)
        return
    total = len(proposal_image_order(Path(region_proposals.path)))
    yield from shard_outputs(total, config.shards, images.dataset, region_proposals.path)


@dg.op(tags=accelerator_step_tags())
@typed_handoffs
def region_features_shard(
    context: dg.OpExecutionContext,
    config: RegionFeatureConfig,
    shard: RegionShard | Skipped,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> ShardResult | Skipped:
    """Region vectors of one shard's images, to that shard's own file."""
    if isinstance(shard, Skipped):
        return shard
    root, dataset = storage.root, shard.dataset
    spec = shard_spec(shard, len(proposal_image_order(Path(shard.proposals))))
    _, final_path = _region_feature_file(root, dataset, config)
    path = shard_file(final_path, spec, context.run_id)
    stats = extract_region_features(
        load_dataset_table(root, dataset, "images"),
        shard.proposals,
        path,
        settings_from(config, RegionFeatureSettings),
        num_workers=compute.workers,
        device=compute.device_name,
        progress=progress_logger(context, f"region features {spec.key}"),
        dataset=dataset,
        image_range=(spec.start, spec.stop),
    )
    return shard_result(shard, path, stats.rows, stats.seconds, dim=stats.dim)


@dg.op
@typed_handoffs
def region_features_merge(
    config: RegionFeatureConfig, shards: list[ShardResult | Skipped], storage: TwobranchStorage
) -> dg.Output[RegionFeatureFile | Skipped]:
    """The shards' files joined, in order, into ``features/<dataset>/region_<variant>.parquet``."""
    if skipped := first_skipped(*shards):
        return skipped_output(skipped.dataset, skipped.reason)
    results = _extracted(shards)
    variant, path = _region_feature_file(storage.root, results[0].shard.dataset, config)
    region_path = _region_path(config)
    return merged_features(
        results,
        path,
        variant,
        RegionFeatureFile,
        config.feature_dtype,
        region_path=region_path,
        roi_pooling=config.roi_pooling,
        network_input=(
            f"shorter side {config.shorter_side}, longer side at most {config.max_longer_side}"
            if region_path == "fast_rcnn"
            else f"{config.image_size or 'native'} px square"
        ),
    )


@dg.config_mapping
def _region_features_config(values: RegionFeatureConfig) -> dict:
    return same_config_for_ops(
        values, "region_features_plan", "region_features_shard", "region_features_merge"
    )


@dg.graph_asset(
    config=_region_features_config,
    group_name=FEATURES_GROUP,
    kinds={"pytorch", "parquet"},
    partitions_def=DATASETS,
)
@typed_handoffs
def region_features(
    images: PublishedTables, region_proposals: RegionProposalFile | Skipped
) -> RegionFeatureFile | Skipped:
    """One vector per proposal (and per training ground-truth box), extracted in ``shards``
    parallel steps and joined into ``features/<dataset>/region_<variant>.parquet``."""
    shards = region_features_plan(images, region_proposals).map(region_features_shard)
    return region_features_merge(shards.collect())
