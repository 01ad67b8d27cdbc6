"""Evaluation assets: retrieval (single- and two-stage) and phrase localization on the test
split, written to the DuckDB result tables, one set of rows per training run."""

import time

import dagster as dg

from assets.handoff_types import typed_handoffs
from assets.metadata import png_bytes_value, preview
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from assets.skips import skipped_output, waiting_for_retraining
from ops.evaluation.eccv_caption import eccv_caption_evaluation, with_eccv_rows
from ops.evaluation.localization import evaluate_localization_runs, store_localization_results
from ops.evaluation.retrieval import evaluate_retrieval_runs, store_retrieval_results
from ops.evaluation.settings import RetrievalEvalSettings
from ops.handoffs import (
    LocalizationEvalSummary,
    RetrievalEvalSummary,
    Skipped,
    TrainedModel,
    skip_reason,
)
from ops.report.plots import recall_curves
from ops.storage.input_fingerprints import InputsChanged

EVALUATION_GROUP = "evaluation"


RetrievalEvalConfig = dagster_config(RetrievalEvalSettings, "RetrievalEvalConfig", __name__)


@dg.asset(group_name=EVALUATION_GROUP, kinds={"pytorch", "duckdb"}, partitions_def=DATASETS)
@typed_handoffs
def retrieval_eval(
    context: dg.AssetExecutionContext,
    config: RetrievalEvalConfig,
    image_sentence_embedding_net: TrainedModel,
    image_sentence_similarity_net: TrainedModel,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[RetrievalEvalSummary | Skipped]:
    """Recall@1/5/10 both directions, median/mean rank, R-sum, R-Precision and mAP@R of the
    models it is given, per protocol; two-stage retrieval rescores the embedding network's
    top-k by embedding + w × similarity score, w chosen on the validation split
    (``two_stage_weights`` table). On COCO's Karpathy 5K test also the ECCV Caption
    extended-positive metrics (protocol ``eccv_caption``). Per-query ranks go to
    ``retrieval_ranks``."""
    started = time.perf_counter()
    try:
        result = evaluate_retrieval_runs(
            image_sentence_embedding_net,
            image_sentence_similarity_net,
            settings_from(config, RetrievalEvalSettings),
            device=compute.device_name,
        )
    except InputsChanged as error:
        return waiting_for_retraining(context, image_sentence_embedding_net.dataset, error)
    eccv = eccv_caption_evaluation(
        storage.root, image_sentence_embedding_net, config.split, compute.device_name
    )
    result = with_eccv_rows(result, image_sentence_embedding_net, eccv)
    store_retrieval_results(storage.root, result)
    context.log.info("\n" + result.summary.round(2).to_string(index=False))
    two_stage = result.two_stage
    return dg.Output(
        result.output(),
        metadata={
            "metrics": preview(result.summary.round(2), rows=50),
            **(
                {
                    "two_stage_weight": two_stage["weight"],
                    "two_stage_on_validation": dg.MetadataValue.json(two_stage),
                }
                if two_stage
                else {}
            ),
            "recall_at_k": png_bytes_value(recall_curves(result.curves)),
            "timings": dg.MetadataValue.json(result.timings),
            "rows": result.n_images + result.n_captions,  # queries, both directions
            "seconds": round(time.perf_counter() - started, 2),
            "test_images": result.n_images,
            "test_captions": result.n_captions,
            "eccv_caption": eccv.note,
        },
    )


@dg.asset(group_name=EVALUATION_GROUP, kinds={"pytorch", "duckdb"}, partitions_def=DATASETS)
@typed_handoffs
def localization_eval(
    context: dg.AssetExecutionContext,
    phrase_region_embedding_net: TrainedModel | Skipped,
    phrase_region_similarity_net: TrainedModel | Skipped,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[LocalizationEvalSummary | Skipped]:
    """Phrase localization accuracy (top-1 proposal at IoU ≥ 0.5 with the ground truth),
    with the proposals' upper bound, per phrase type, for the models it is given."""
    if reason := skip_reason(phrase_region_embedding_net, phrase_region_similarity_net):
        return skipped_output(phrase_region_embedding_net.dataset, reason)
    started = time.perf_counter()
    try:
        result = evaluate_localization_runs(
            phrase_region_embedding_net,
            phrase_region_similarity_net,
            storage.root,
            compute.device_name,
        )
    except InputsChanged as error:
        return waiting_for_retraining(context, phrase_region_embedding_net.dataset, error)
    store_localization_results(storage.root, result)
    context.log.info("\n" + result.summary.round(2).to_string(index=False))
    return dg.Output(
        result.output(),
        metadata={
            "summary": preview(result.summary.round(2)),
            "per_type": preview(result.per_type.round(2), rows=40),
            "random_proposal_accuracy": round(result.random_proposal_accuracy, 2),
            "rows": result.n_phrases,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


EVALUATION_ASSETS = [retrieval_eval, localization_eval]
