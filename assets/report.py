"""The report asset: a self-contained HTML report of the evaluated models."""

import time

import dagster as dg

from assets.handoff_types import typed_handoffs
from assets.metadata import png_bytes_value
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.skips import skipped_output
from ops.handoffs import (
    LocalizationEvalSummary,
    ReportFile,
    RetrievalEvalSummary,
    Skipped,
    TrainedModel,
    skip_reason,
)
from ops.report.build import build_report
from ops.report.settings import ReportSettings

REPORT_GROUP = "evaluation"


ReportConfig = dagster_config(ReportSettings, "ReportConfig", __name__)


@dg.asset(group_name=REPORT_GROUP, kinds={"html"}, partitions_def=DATASETS)
@typed_handoffs
def report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    image_sentence_embedding_net: TrainedModel,
    image_sentence_similarity_net: TrainedModel,
    phrase_region_embedding_net: TrainedModel | Skipped,
    phrase_region_similarity_net: TrainedModel | Skipped,
    retrieval_eval: RetrievalEvalSummary | Skipped,
    localization_eval: LocalizationEvalSummary | Skipped,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[ReportFile | Skipped]:
    """``reports/<run_id>/report.html``: training curves, Recall@K for K = 1..50, every run
    beside the paper's published numbers, grounding accuracy per phrase type, and galleries
    of retrieved images and localized phrases."""
    if isinstance(retrieval_eval, Skipped):
        return skipped_output(image_sentence_embedding_net.dataset, retrieval_eval.reason)
    started = time.perf_counter()
    phrases_skipped = skip_reason(localization_eval)
    # A localization evaluation was made from both phrase–region models, never skipped ones.
    phrase_runs = [
        run
        for run in (phrase_region_embedding_net, phrase_region_similarity_net)
        if isinstance(run, TrainedModel)
    ]
    built = build_report(
        storage.root,
        [image_sentence_embedding_net, image_sentence_similarity_net],
        phrase_runs,
        retrieval_eval,
        None if isinstance(localization_eval, Skipped) else localization_eval,
        settings_from(config, ReportSettings),
        device=compute.device_name,
    )
    context.log.info(f"report written to {built.path}")
    return dg.Output(
        ReportFile(path=str(built.path), report_id=built.report_id),
        metadata={
            "path": dg.MetadataValue.path(str(built.path)),
            **{name: png_bytes_value(data) for name, data in built.plots.items()},
            **({"phrase_section": f"left out: {phrases_skipped}"} if phrases_skipped else {}),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
