"""A training run's curves (loss and validation score per epoch) as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ops.plotting import figure_png, subplots


def curves_png(epochs: Sequence[Mapping], score_name: str) -> bytes:
    """Training loss (left) and validation ``score_name`` (right) per epoch."""
    figure, (left, right) = subplots(1, 2, figsize=(8, 2.8))
    numbers = [e["epoch"] for e in epochs]
    left.plot(numbers, [e["loss"] for e in epochs], marker="o", color="#c44e52")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    scores = [float("nan") if e["val_score"] is None else e["val_score"] for e in epochs]
    right.plot(numbers, scores, marker="o", color="#4c72b0")
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {score_name}")
    figure.tight_layout()
    return figure_png(figure)
