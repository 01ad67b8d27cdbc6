"""Sanity checks of test evaluations: recalls and accuracies above chance. Each returns a
:class:`~ops.data.checks.CheckOutcome`."""

from __future__ import annotations

import pandas as pd

from ops.data.checks import CheckOutcome


def check_recall_above_chance(metrics: list[dict], n_images: int, k: int = 10) -> CheckOutcome:
    """Every recall in [0, 100], and R@``k`` of every model and direction above chance
    (``k / n_images`` of the queries, in percent, for 1 positive image or ~5 positive
    captions among 5 per image alike — METHOD.md "Chance levels")."""
    chance = 100.0 * k / n_images
    problems = []
    for row in metrics:
        label = f"{row['network']} {row['method']} {row['protocol']} {row['direction']}"
        # A protocol may not report every K (eccv_caption has R@1 only): NULL is not checked.
        recalls = [r for r in (row["r1"], row["r5"], row["r10"]) if not pd.isna(r)]
        if not all(0.0 <= r <= 100.0 for r in recalls):
            problems.append(f"{label}: recall outside [0, 100] ({recalls})")
        if not pd.isna(row[f"r{k}"]) and row[f"r{k}"] <= chance:
            problems.append(f"{label}: R@{k} {row[f'r{k}']:.2f} at or below chance {chance:.2f}")
    return CheckOutcome(
        passed=not problems,
        description="; ".join(problems) or f"every R@{k} above chance ({chance:.2f}%)",
        details={"chance_r10": chance, "rows": len(metrics)},
    )


def check_accuracy_above_random(summary: list[dict], random_accuracy: float) -> CheckOutcome:
    problems = [
        f"{row['network']}: accuracy {row['accuracy']:.2f} at or below a random proposal's "
        f"{random_accuracy:.2f}"
        for row in summary
        if not row["accuracy"] > random_accuracy
    ]
    return CheckOutcome(
        passed=not problems,
        description="; ".join(problems)
        or f"every model beats a random proposal ({random_accuracy:.2f}%)",
        details={"random_proposal_accuracy": random_accuracy},
    )
