"""Checks on the evaluations: a model at or below chance fails."""

import dagster as dg

from assets.data_checks import outcome_result
from ops.data_checks import check_accuracy_above_random, check_recall_above_chance


@dg.asset_check(asset="retrieval_eval")
def retrieval_above_chance(retrieval_eval: dict) -> dg.AssetCheckResult:
    """Recalls in [0, 100]; R@10 of every model, method and direction above chance."""
    return outcome_result(
        check_recall_above_chance(retrieval_eval["metrics"], retrieval_eval["n_images"])
    )


@dg.asset_check(asset="localization_eval")
def localization_above_random(localization_eval: dict) -> dg.AssetCheckResult:
    """Each model's accuracy beats picking a random proposal."""
    return outcome_result(
        check_accuracy_above_random(
            localization_eval["summary"], localization_eval["random_proposal_accuracy"]
        )
    )


EVALUATION_CHECKS = [retrieval_above_chance, localization_above_random]
