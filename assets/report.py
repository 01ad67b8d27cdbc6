"""The report asset: a self-contained HTML report of the evaluated models."""

import time

import dagster as dg

from assets.metadata import png_bytes_value
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.skips import skip_reason, skipped_output
from ops.report.build import build_report
from ops.report.settings import ReportSettings

REPORT_GROUP = "evaluation"


ReportConfig = dagster_config(ReportSettings, "ReportConfig", __name__)


@dg.asset(group_name=REPORT_GROUP, kinds={"html"}, partitions_def=DATASETS)
def report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    image_sentence_embedding_net: dict,
    image_sentence_similarity_net: dict,
    phrase_region_embedding_net: dict,
    phrase_region_similarity_net: dict,
    retrieval_eval: dict,
    localization_eval: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """``reports/<run_id>/report.html``: training curves, Recall@K for K = 1..50, every run
    beside the paper's published numbers, grounding accuracy per phrase type, and galleries
    of retrieved images and localized phrases."""
    if reason := skip_reason(retrieval_eval):
        return skipped_output(image_sentence_embedding_net["dataset"], reason)
    started = time.perf_counter()
    phrases_skipped = skip_reason(localization_eval)
    built = build_report(
        storage.root,
        [image_sentence_embedding_net, image_sentence_similarity_net],
        [phrase_region_embedding_net, phrase_region_similarity_net],
        retrieval_eval,
        None if phrases_skipped else localization_eval,
        settings_from(config, ReportSettings),
        device=compute.device_name,
    )
    context.log.info(f"report written to {built.path}")
    return dg.Output(
        {"path": str(built.path), "report_id": built.report_id},
        metadata={
            "path": dg.MetadataValue.path(str(built.path)),
            **{name: png_bytes_value(data) for name, data in built.plots.items()},
            **({"phrase_section": f"left out: {phrases_skipped}"} if phrases_skipped else {}),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
