"""Evaluation assets: retrieval (single- and two-stage) and phrase localization on the test
split, written to the DuckDB result tables, one set of rows per training run."""

import time

import dagster as dg
from pydantic import Field, field_validator

from assets.metadata import png_bytes_value, preview
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.skips import skip_reason, skipped_output, waiting_for_retraining
from ops.evaluation.eccv_caption import eccv_caption_evaluation, with_eccv_rows
from ops.evaluation.localization import evaluate_localization_runs, store_localization_results
from ops.evaluation.retrieval import evaluate_retrieval_runs, store_retrieval_results
from ops.evaluation.two_stage import DEFAULT_WEIGHTS
from ops.metrics.retrieval_protocols import PROTOCOLS
from ops.report.html import recall_curves
from ops.storage.input_fingerprints import InputsChanged

EVALUATION_GROUP = "evaluation"


class RetrievalEvalConfig(dg.Config):
    """``rerank_k``: candidates per query that two-stage retrieval rescores as embedding score
    + w × similarity score (0 turns two-stage off), w being the one of ``two_stage_weights``
    (0 always included) with the best R-sum on ``tune_split``. ``protocols``: e.g. ``[1k,
    5fold_1k, 5k]`` for COCO; empty = by test-set size (5,000+ images: 5fold_1k and 5k;
    1,000: 1k; otherwise all)."""

    rerank_k: int = Field(default=20, ge=0)
    split: str = "test"
    two_stage_weights: list[float] = list(DEFAULT_WEIGHTS)
    tune_split: str = "val"
    protocols: list[str] = []

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, values: list[str]) -> list[str]:
        unknown = sorted(set(values) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; use some of {list(PROTOCOLS)}")
        return values


@dg.asset(group_name=EVALUATION_GROUP, kinds={"pytorch", "duckdb"}, partitions_def=DATASETS)
def retrieval_eval(
    context: dg.AssetExecutionContext,
    config: RetrievalEvalConfig,
    image_sentence_embedding_net: dict,
    image_sentence_similarity_net: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
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
            config.split,
            config.rerank_k,
            compute.device_name,
            weights=config.two_stage_weights,
            tune_split=config.tune_split,
            protocols=config.protocols or None,
        )
    except InputsChanged as error:
        return waiting_for_retraining(context, image_sentence_embedding_net["dataset"], error)
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
def localization_eval(
    context: dg.AssetExecutionContext,
    phrase_region_embedding_net: dict,
    phrase_region_similarity_net: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """Phrase localization accuracy (top-1 proposal at IoU ≥ 0.5 with the ground truth),
    with the proposals' upper bound, per phrase type, for the models it is given."""
    if reason := skip_reason(phrase_region_embedding_net, phrase_region_similarity_net):
        return skipped_output(phrase_region_embedding_net["dataset"], reason)
    started = time.perf_counter()
    try:
        result = evaluate_localization_runs(
            phrase_region_embedding_net,
            phrase_region_similarity_net,
            storage.root,
            compute.device_name,
        )
    except InputsChanged as error:
        return waiting_for_retraining(context, phrase_region_embedding_net["dataset"], error)
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
