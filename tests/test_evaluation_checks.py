"""The evaluation checks fail a model at or below chance."""

from __future__ import annotations

from ops.evaluation.checks import check_accuracy_above_random, check_recall_above_chance


def _row(direction: str, r1: float, r5: float, r10: float) -> dict:
    return {
        "network": "embedding",
        "method": "single_stage",
        "protocol": "1k",
        "direction": direction,
        "r1": r1,
        "r5": r5,
        "r10": r10,
    }


def test_recall_check_passes_above_chance_and_fails_at_it() -> None:
    good = [_row("i2t", 20.0, 50.0, 70.0), _row("t2i", 10.0, 30.0, 45.0)]
    assert check_recall_above_chance(good, n_images=1000).passed
    at_chance = [_row("i2t", 20.0, 50.0, 70.0), _row("t2i", 0.1, 0.5, 1.0)]
    outcome = check_recall_above_chance(at_chance, n_images=1000)
    assert not outcome.passed and "t2i: R@10 1.00 at or below chance 1.00" in outcome.description
    broken = [_row("i2t", 20.0, 50.0, 170.0)]
    assert "outside [0, 100]" in check_recall_above_chance(broken, 1000).description
    # ECCV Caption rows report R@1 only; their missing R@5/R@10 are not failures.
    eccv = good + [_row("i2t", 45.0, float("nan"), float("nan")) | {"protocol": "eccv_caption"}]
    assert check_recall_above_chance(eccv, n_images=1000).passed
    eccv[-1]["r1"] = 140.0
    assert "eccv_caption i2t: recall outside" in check_recall_above_chance(eccv, 1000).description


def test_grounding_check_needs_more_than_a_random_proposal() -> None:
    rows = [{"network": "embedding", "accuracy": 71.7}, {"network": "similarity", "accuracy": 20.0}]
    outcome = check_accuracy_above_random(rows, random_accuracy=21.2)
    assert not outcome.passed and "similarity" in outcome.description
    assert check_accuracy_above_random(rows[:1], 21.2).passed
