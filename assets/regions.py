"""Region assets for phrase localization: proposals per image and their CNN features."""

from typing import Literal

import dagster as dg
import pandas as pd

from assets.metadata import preview
from assets.progress import progress_logger
from assets.resources import ComputeSettings, TwobranchStorage
from ops.dataset_store import load_dataset_table
from ops.features.proposals import proposal_upper_bound, propose_regions
from ops.features.region_features import extract_region_features, region_variant
from ops.paths import features_path
from ops.results_store import derived_table_file

FEATURES_GROUP = "features"


class ProposalConfig(dg.Config):
    """Region proposals: up to ``max_proposals`` per image (the paper used 200 EdgeBoxes).
    ``edge_boxes`` needs OpenCV's structured-edge model file at ``edge_model_path``.
    ``max_images_per_split`` limits the phrase task to a subset of images (0 = all)."""

    max_proposals: int = 200
    method: Literal["selective_search_fast", "selective_search_quality", "edge_boxes"] = (
        "selective_search_fast"
    )
    edge_model_path: str | None = None
    max_images_per_split: int = 0


def _phrase_images(images: pd.DataFrame, phrases: pd.DataFrame, max_per_split: int) -> pd.DataFrame:
    """Images that have at least one visual, boxed phrase (optionally the first N per split)."""
    boxed = phrases[(phrases["phrase_type"] != "notvisual") & phrases["gt_x1"].notna()]
    chosen = images[images["image_id"].isin(set(boxed["image_id"]))]
    if max_per_split:
        chosen = chosen.groupby("split", sort=False).head(max_per_split)
    return chosen.reset_index(drop=True)


@dg.asset(group_name=FEATURES_GROUP, kinds={"opencv", "parquet"})
def region_proposals(
    context: dg.AssetExecutionContext,
    config: ProposalConfig,
    images: dict,
    phrases: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """Candidate boxes per image (selective search), plus the ground-truth phrase boxes of
    the training split only; reports the proposals' upper bound per split."""
    root, dataset = storage.root, images["dataset"]
    phrase_rows = load_dataset_table(root, dataset, "phrases")
    chosen = _phrase_images(
        load_dataset_table(root, dataset, "images"), phrase_rows, config.max_images_per_split
    )
    path = derived_table_file(root, dataset, "region_proposals")
    stats = propose_regions(
        chosen,
        path,
        max_proposals=config.max_proposals,
        method=config.method,
        include_ground_truth_for=phrase_rows[phrase_rows["split"] == "train"],
        num_workers=max(1, compute.num_workers),
        progress=progress_logger(context, "region proposals"),
        model_path=config.edge_model_path,
    )
    proposals = pd.read_parquet(path)
    bound = proposal_upper_bound(
        phrase_rows[phrase_rows["image_id"].isin(set(chosen["image_id"]))], proposals
    )
    per_image = proposals[proposals["source"] == "proposal"].groupby("image_id").size()
    return dg.Output(
        {"dataset": dataset, "path": str(path), "images": len(chosen), "method": config.method},
        metadata={
            "images": len(chosen),
            "regions": len(proposals),
            "proposals_per_image_mean": round(float(per_image.mean()), 1),
            "upper_bound": preview(bound),
            "seconds": round(stats.seconds, 2),
        },
    )


class RegionFeatureConfig(dg.Config):
    """Region features: RoIAlign over the backbone's last conv map, then the backbone's head;
    ``spatial_features`` appends the box geometry (x1/W, y1/H, x2/W, y2/H, area)."""

    backbone: str = "resnet18"
    weights: str = "none"
    image_size: int | None = None
    spatial_features: bool = True
    batch_size: int = 32


@dg.asset(group_name=FEATURES_GROUP, kinds={"pytorch", "parquet"})
def region_features(
    context: dg.AssetExecutionContext,
    config: RegionFeatureConfig,
    images: dict,
    region_proposals: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """One vector per proposal (and per training ground-truth box), streamed to Parquet."""
    root, dataset = storage.root, images["dataset"]
    table = load_dataset_table(root, dataset, "images")
    variant = region_variant(config.backbone, config.image_size, config.spatial_features)
    path = features_path(root, dataset, "region", variant)
    stats = extract_region_features(
        table,
        region_proposals["path"],
        path,
        backbone=config.backbone,
        weights=config.weights,
        image_size=config.image_size,
        spatial_features=config.spatial_features,
        batch_size=config.batch_size,
        num_workers=compute.num_workers,
        device=compute.device,
        progress=progress_logger(context, "region features"),
        dataset=dataset,
    )
    return dg.Output(
        {
            "dataset": dataset,
            "path": str(path),
            "rows": stats.rows,
            "dim": stats.dim,
            "variant": variant,
        },
        metadata={
            "rows": stats.rows,
            "dim": stats.dim,
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(stats.seconds, 2),
        },
    )
