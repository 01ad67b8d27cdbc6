"""Data assets: acquire the raw dataset, parse it into images / captions / phrases tables."""

import time
from typing import Literal

import dagster as dg

from assets.metadata import counts_by, preview
from assets.resources import TwobranchStorage
from ops.dataset_store import publish_dataset_tables, tables_fingerprint
from ops.datasets.acquire import RawDataset, acquire_custom, acquire_synthetic, parse_raw_dataset
from ops.results_store import publish_catalogue

DATA_GROUP = "data"


class DatasetConfig(dg.Config):
    """Which dataset to use. ``synthetic`` is generated offline and deterministically."""

    source: Literal["synthetic", "flickr30k", "coco", "flickr30k_entities", "custom"] = "synthetic"
    seed: int = 0
    synthetic_train_images: int = 5000
    synthetic_val_images: int = 1000
    synthetic_test_images: int = 1000
    synthetic_image_size: int = 128
    local_path: str | None = None
    restval_to_train: bool = True
    check_images: bool = True


@dg.asset(group_name=DATA_GROUP, kinds={"python", "files"})
def raw_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, storage: TwobranchStorage
) -> dg.Output[dict]:
    """The dataset's raw files on disk, in their public formats (Karpathy JSON, Flickr30K
    Entities Sentences/Annotations, JPEG images)."""
    root = storage.root
    if config.source == "synthetic":
        raw = acquire_synthetic(
            root,
            seed=config.seed,
            n_train=config.synthetic_train_images,
            n_val=config.synthetic_val_images,
            n_test=config.synthetic_test_images,
            image_size=config.synthetic_image_size,
        )
    elif config.source == "custom":
        if not config.local_path:
            raise dg.Failure("source 'custom' needs local_path: a folder with a Karpathy JSON")
        raw = acquire_custom(config.local_path)
    else:
        from ops.datasets.remote import acquire_public

        raw = acquire_public(config.source, root, config.local_path, log=context.log.info)
    context.log.info(f"raw dataset {raw.dataset} at {raw.karpathy_json}")
    return dg.Output(
        raw.to_dict()
        | {"restval_to_train": config.restval_to_train, "check_images": config.check_images},
        metadata={
            "dataset": raw.dataset,
            "karpathy_json": dg.MetadataValue.path(raw.karpathy_json),
            "image_root": dg.MetadataValue.path(raw.image_root),
            "entities_root": raw.entities_root or "",
            "seconds": round(raw.seconds, 2),
        },
    )


@dg.multi_asset(
    outs={
        "images": dg.AssetOut(group_name=DATA_GROUP, description="Valid images, one row each."),
        "captions": dg.AssetOut(group_name=DATA_GROUP, description="Captions of valid images."),
        "phrases": dg.AssetOut(
            group_name=DATA_GROUP, description="Noun phrases with entity types and boxes."
        ),
    },
)
def dataset_tables(
    context: dg.AssetExecutionContext,
    raw_dataset: dict,
    storage: TwobranchStorage,
):
    """Parse the raw files with the real-format loaders; bad images are skipped and listed in
    the ``rejects`` table; the four tables are published together."""
    started = time.perf_counter()
    fields = {k: raw_dataset[k] for k in RawDataset.__dataclass_fields__}
    raw = RawDataset(**fields)
    tables = parse_raw_dataset(
        raw,
        restval_to_train=raw_dataset.get("restval_to_train", True),
        check_images=raw_dataset.get("check_images", True),
    )
    root = storage.root
    folder = publish_dataset_tables(root, tables)
    publish_catalogue(root)
    seconds = round(time.perf_counter() - started, 2)
    fingerprint = tables_fingerprint(tables)
    manifest = {"dataset": tables.dataset, "tables_dir": str(folder), "fingerprint": fingerprint}
    n_rejects = len(tables.rejects)
    if n_rejects:
        context.log.warning(f"{n_rejects} items rejected; see the rejects table")
    yield dg.Output(
        manifest,
        output_name="images",
        metadata={
            "rows": len(tables.images),
            "per_split": counts_by(tables.images, "split"),
            "rejected": n_rejects,
            "rejects_preview": preview(tables.rejects),
            "preview": preview(tables.images.drop(columns=["path"])),
            "seconds": seconds,
        },
    )
    yield dg.Output(
        manifest,
        output_name="captions",
        metadata={
            "rows": len(tables.captions),
            "per_split": counts_by(tables.captions, "split"),
            "captions_per_image": round(len(tables.captions) / max(1, len(tables.images)), 3),
            "data_fingerprint": fingerprint,
            "preview": preview(tables.captions[["caption_id", "split", "text"]]),
            "seconds": seconds,
        },
    )
    yield dg.Output(
        manifest,
        output_name="phrases",
        metadata={
            "rows": len(tables.phrases),
            "per_type": counts_by(tables.phrases, "phrase_type"),
            "preview": preview(
                tables.phrases[["phrase_id", "text", "phrase_type", "gt_x1", "gt_y1"]]
            ),
            "seconds": seconds,
        },
    )
