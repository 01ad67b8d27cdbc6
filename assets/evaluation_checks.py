"""Checks on the evaluations: a model at or below chance fails."""

import dagster as dg

from assets.data_checks import outcome_result
from assets.partitions import load_skippable_output
from assets.skips import skipped_check
from ops.evaluation.checks import check_accuracy_above_random, check_recall_above_chance
from ops.handoffs import LocalizationEvalSummary, RetrievalEvalSummary, Skipped


@dg.asset_check(asset="retrieval_eval", required_resource_keys={"io_manager"})
def retrieval_above_chance(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Recalls in [0, 100]; R@10 of every model, method and direction above chance."""
    retrieval_eval = load_skippable_output(context, "retrieval_eval", RetrievalEvalSummary)
    if isinstance(retrieval_eval, Skipped):
        return skipped_check(retrieval_eval.reason)
    return outcome_result(
        check_recall_above_chance(retrieval_eval.metrics, retrieval_eval.n_images)
    )


@dg.asset_check(asset="localization_eval", required_resource_keys={"io_manager"})
def localization_above_random(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Each model's accuracy beats picking a random proposal."""
    localization_eval = load_skippable_output(context, "localization_eval", LocalizationEvalSummary)
    if isinstance(localization_eval, Skipped):
        return skipped_check(localization_eval.reason)
    return outcome_result(
        check_accuracy_above_random(
            localization_eval.summary, localization_eval.random_proposal_accuracy
        )
    )


EVALUATION_CHECKS = [retrieval_above_chance, localization_above_random]
