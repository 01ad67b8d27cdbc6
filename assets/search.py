"""The retrieval index asset: what ``twobranch search`` asks, rebuilt when the champion changes."""

import dagster as dg
import pandas as pd

from assets.handoff_types import typed_handoffs
from assets.metadata import preview
from assets.partitions import DATASETS
from assets.progress import progress_logger
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.skips import waiting_for_retraining
from ops.handoffs import RetrievalIndexFolder, Skipped, TrainedModel
from ops.search.index_build import build_retrieval_index
from ops.search.settings import IndexSettings
from ops.storage.input_fingerprints import InputsChanged

SEARCH_GROUP = "search"

RetrievalIndexConfig = dagster_config(IndexSettings, "RetrievalIndexConfig", __name__)


def _split_rows(manifest: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"side": side, "split": split, "rows": stop - start}
            for side in ("images", "captions")
            for split, (start, stop) in manifest[side]["splits"].items()
        ]
    )


@dg.asset(
    group_name=SEARCH_GROUP,
    kinds={"faiss", "parquet"},
    partitions_def=DATASETS,
    ins={"image_sentence_embedding_net": dg.AssetIn()},
)
@typed_handoffs
def retrieval_index(
    context: dg.AssetExecutionContext,
    config: RetrievalIndexConfig,
    image_sentence_embedding_net: TrainedModel,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[RetrievalIndexFolder | Skipped]:
    """Every image and caption of the dataset (all splits) embedded by the champion
    image–sentence embedding network, in Parquet and faiss (exact inner product by default),
    with the champion's text encoder: what ``twobranch search`` answers from. Training a new
    champion makes it stale; the jobs that train rebuild it."""
    dataset = image_sentence_embedding_net.dataset
    try:
        built = build_retrieval_index(
            storage.root,
            dataset,
            settings_from(config, IndexSettings),
            compute.device_name,
            log=context.log.info,
            progress=lambda what: progress_logger(context, what),
        )
    except InputsChanged as error:
        # The index on disk, built by the champion on its own features, keeps answering.
        return waiting_for_retraining(context, dataset, error)
    manifest = built.manifest
    return dg.Output(
        RetrievalIndexFolder(
            dataset=manifest["dataset"], path=str(built.folder), run_id=manifest["run_id"]
        ),
        metadata={
            "rows": manifest["images"]["rows"] + manifest["captions"]["rows"],
            "images": manifest["images"]["rows"],
            "captions": manifest["captions"]["rows"],
            "champion_run_id": manifest["run_id"],
            "rebuilt": built.rebuilt,
            "index_type": manifest["settings"]["index_type"],
            "build_seconds": manifest["build_seconds"],
            "size_on_disk_mb": round(built.size_bytes / 2**20, 3),
            "preview": preview(_split_rows(manifest)),
            "index_folder": dg.MetadataValue.path(str(built.folder)),
            "seconds": round(built.seconds, 2),
        },
    )
