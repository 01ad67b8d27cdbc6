"""Data assets: acquire the raw dataset, parse it into images / captions / phrases tables."""

import time

import dagster as dg

from assets.handoff_types import dagster_type, typed_handoffs
from assets.metadata import counts_by, preview
from assets.partitions import DATASETS, dataset_of
from assets.resources import TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.skips import SKIPPED, no_phrases_reason
from ops.data.acquire import RawDataset, parse_raw_dataset
from ops.data.dataset_store import publish_dataset_tables, tables_fingerprint
from ops.data.registered import acquire_dataset
from ops.data.registry import DatasetRegistryError, get_dataset
from ops.data.settings import DatasetSettings
from ops.data.tables import CAPTIONS_PER_IMAGE, beyond_caption_limit
from ops.handoffs import PublishedTables, RawDatasetFiles, Skipped
from ops.metrics.localization_rule import evaluable_phrases

DATA_GROUP = "data"


DatasetConfig = dagster_config(DatasetSettings, "DatasetConfig", __name__)
# The settings that reach the parse step through the raw_dataset hand-off: its fields beyond
# the raw files'.
PARSE_SETTINGS = tuple(
    name for name in RawDatasetFiles.model_fields if name not in RawDataset.__dataclass_fields__
)


@dg.asset(group_name=DATA_GROUP, kinds={"python", "files"}, partitions_def=DATASETS)
@typed_handoffs
def raw_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, storage: TwobranchStorage
) -> dg.Output[RawDatasetFiles]:
    """The dataset's raw files on disk, in their public formats (Karpathy JSON, Flickr30K
    Entities Sentences/Annotations, COCO caption JSON, JPEG images), as registered."""
    root = storage.root
    try:
        entry = get_dataset(root, dataset_of(context))
    except DatasetRegistryError as error:
        raise dg.Failure(str(error)) from None
    settings = settings_from(config, DatasetSettings)
    raw = acquire_dataset(entry, root, settings, log=context.log.info)
    context.log.info(f"raw dataset {raw.dataset} ({entry.source}) at {raw.karpathy_json}")
    return dg.Output(
        RawDatasetFiles(
            **raw.to_dict(), **{name: getattr(settings, name) for name in PARSE_SETTINGS}
        ),
        metadata={
            "dataset": raw.dataset,
            "source": entry.source,
            "karpathy_json": dg.MetadataValue.path(raw.karpathy_json),
            "image_root": dg.MetadataValue.path(raw.image_root),
            "entities_root": raw.entities_root or "",
            "seconds": round(raw.seconds, 2),
        },
    )


@dg.multi_asset(
    outs={
        "images": dg.AssetOut(
            group_name=DATA_GROUP,
            description="Valid images, one row each.",
            dagster_type=dagster_type(PublishedTables),
        ),
        "captions": dg.AssetOut(
            group_name=DATA_GROUP,
            description="Captions of valid images.",
            dagster_type=dagster_type(PublishedTables),
        ),
        "phrases": dg.AssetOut(
            group_name=DATA_GROUP,
            dagster_type=dagster_type(PublishedTables | Skipped),
            description="Noun phrases with entity types and boxes (none for a dataset "
            "without phrase annotations: the phrase task is then skipped).",
        ),
    },
    partitions_def=DATASETS,
)
@typed_handoffs
def dataset_tables(
    context: dg.AssetExecutionContext,
    raw_dataset: RawDatasetFiles,
    storage: TwobranchStorage,
):
    """Parse the raw files with the real-format loaders; bad images are skipped and listed in
    the ``rejects`` table; the four tables are published together."""
    started = time.perf_counter()
    raw = RawDataset(**raw_dataset.model_dump(include=set(RawDataset.__dataclass_fields__)))
    settings = DatasetSettings(**raw_dataset.model_dump(include=set(PARSE_SETTINGS)))
    tables = parse_raw_dataset(raw, settings)
    root = storage.root
    folder = publish_dataset_tables(root, tables)
    seconds = round(time.perf_counter() - started, 2)
    fingerprint = tables_fingerprint(tables)
    manifest = PublishedTables(
        dataset=tables.dataset, tables_dir=str(folder), fingerprint=fingerprint
    )
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
            "rejected_per_stage": counts_by(tables.rejects, "stage"),
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
            "captions_dropped_beyond_5": int(
                (tables.rejects["reason"] == beyond_caption_limit(CAPTIONS_PER_IMAGE)).sum()
            ),
            "data_fingerprint": fingerprint,
            "preview": preview(tables.captions[["caption_id", "split", "text"]]),
            "seconds": seconds,
        },
    )
    no_phrases = not evaluable_phrases(tables.phrases, every_listed_type=False).any()
    reason = no_phrases_reason(tables.dataset) if no_phrases else None
    if reason:
        context.log.info(f"{reason}: the phrase localization assets will be skipped")
    yield dg.Output(
        Skipped(dataset=tables.dataset, reason=reason) if reason else manifest,
        output_name="phrases",
        metadata={
            **({SKIPPED: reason} if reason else {}),
            "rows": len(tables.phrases),
            "per_type": counts_by(tables.phrases, "phrase_type"),
            "preview": preview(
                tables.phrases[["phrase_id", "text", "phrase_type", "gt_x1", "gt_y1"]]
            ),
            "seconds": seconds,
        },
    )
