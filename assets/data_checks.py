"""Asset checks on the parsed dataset tables."""

import dagster as dg

from assets.partitions import check_dataset, load_partition_output
from assets.resources import TwobranchStorage
from ops.data.checks import (
    CheckOutcome,
    check_boxes_inside_images,
    check_references,
    check_split_counts,
    check_unique_ids,
)
from ops.data.dataset_store import load_dataset_table
from ops.handoffs import RawDatasetFiles


def outcome_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata={
            k: dg.MetadataValue.json(v) if isinstance(v, dict) else v
            for k, v in outcome.details.items()
        },
    )


@dg.asset_check(asset="captions", blocking=True, required_resource_keys={"io_manager", "storage"})
def split_counts_as_declared(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Images per split as the dataset declares, and enough captions per image."""
    root, dataset = context.resources.storage.root, check_dataset(context)
    raw_dataset = load_partition_output(context, "raw_dataset", RawDatasetFiles)
    rejects = load_dataset_table(root, dataset, "rejects")
    return outcome_result(
        check_split_counts(
            load_dataset_table(root, dataset, "images"),
            load_dataset_table(root, dataset, "captions"),
            raw_dataset.declared_images,
            raw_dataset.min_captions_per_image,
            rejected_images=int((rejects["stage"] == "images").sum()),
        )
    )


@dg.asset_check(asset="images", blocking=True)
def image_ids_unique(
    context: dg.AssetCheckExecutionContext, storage: TwobranchStorage
) -> dg.AssetCheckResult:
    """No image id appears twice."""
    images = load_dataset_table(storage.root, check_dataset(context), "images")
    return outcome_result(check_unique_ids(images, "image_id"))


@dg.asset_check(asset="captions", blocking=True)
def captions_reference_images(
    context: dg.AssetCheckExecutionContext, storage: TwobranchStorage
) -> dg.AssetCheckResult:
    """Caption ids are unique and every caption's image exists."""
    root, dataset = storage.root, check_dataset(context)
    caption_rows = load_dataset_table(root, dataset, "captions")
    unique = check_unique_ids(caption_rows, "caption_id")
    if not unique.passed:
        return outcome_result(unique)
    return outcome_result(
        check_references(
            caption_rows, load_dataset_table(root, dataset, "images"), "image_id", "captions"
        )
    )


@dg.asset_check(asset="phrases", blocking=True)
def phrase_boxes_inside_images(
    context: dg.AssetCheckExecutionContext, storage: TwobranchStorage
) -> dg.AssetCheckResult:
    """Every ground-truth phrase box is non-empty and inside its image."""
    root, dataset = storage.root, check_dataset(context)
    return outcome_result(
        check_boxes_inside_images(
            load_dataset_table(root, dataset, "phrases"),
            load_dataset_table(root, dataset, "images"),
        )
    )


DATA_CHECKS = [
    split_counts_as_declared,
    image_ids_unique,
    captions_reference_images,
    phrase_boxes_inside_images,
]
