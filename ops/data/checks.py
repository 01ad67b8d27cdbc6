"""Integrity checks of parsed dataset tables. Each returns a :class:`CheckOutcome`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    details: dict[str, object] = field(default_factory=dict)


def check_split_counts(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    declared_images: Mapping[str, int] | None,
    min_captions_per_image: int,
    rejected_images: int = 0,
) -> CheckOutcome:
    """Images per split as the dataset declares (less rejected images), and every image with
    at least ``min_captions_per_image`` captions."""
    per_split = {str(k): int(v) for k, v in images["split"].value_counts().items()}
    problems: list[str] = []
    if declared_images:
        for split, expected in declared_images.items():
            got = per_split.get(split, 0)
            if not expected - rejected_images <= got <= expected:
                problems.append(f"{split}: {got} images, dataset declares {expected}")
    per_image = captions.groupby("image_id").size().reindex(images["image_id"], fill_value=0)
    short = per_image[per_image < min_captions_per_image]
    if len(short):
        problems.append(
            f"{len(short)} images have fewer than {min_captions_per_image} captions "
            f"(e.g. {', '.join(map(str, short.index[:5]))})"
        )
    return CheckOutcome(
        passed=not problems,
        description="; ".join(problems) or "split sizes and captions per image as declared",
        details={"per_split": per_split, "declared": dict(declared_images or {})},
    )


def check_unique_ids(frame: pd.DataFrame, column: str) -> CheckOutcome:
    duplicated = frame[column][frame[column].duplicated()]
    return CheckOutcome(
        passed=duplicated.empty,
        description=(
            f"{len(duplicated)} duplicate {column} values (e.g. {list(duplicated[:5])})"
            if len(duplicated)
            else f"every {column} is unique"
        ),
        details={"rows": len(frame), "duplicates": len(duplicated)},
    )


def check_references(
    child: pd.DataFrame, parent: pd.DataFrame, column: str, child_name: str
) -> CheckOutcome:
    orphans = child[~child[column].isin(set(parent[column]))]
    return CheckOutcome(
        passed=orphans.empty,
        description=(
            f"{len(orphans)} {child_name} refer to an unknown {column} "
            f"(e.g. {list(orphans[column][:5])})"
            if len(orphans)
            else f"every {child_name} row refers to a known {column}"
        ),
        details={"orphans": len(orphans)},
    )


def check_boxes_inside_images(phrases: pd.DataFrame, images: pd.DataFrame) -> CheckOutcome:
    boxed = phrases.dropna(subset=["gt_x1", "gt_y1", "gt_x2", "gt_y2"])
    sizes = images.set_index("image_id")[["width", "height"]]
    joined = boxed.join(sizes, on="image_id")
    width = joined["width"].astype("float64").to_numpy()
    height = joined["height"].astype("float64").to_numpy()
    x1, y1 = joined["gt_x1"].to_numpy(), joined["gt_y1"].to_numpy()
    x2, y2 = joined["gt_x2"].to_numpy(), joined["gt_y2"].to_numpy()
    bad = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height) | (x2 <= x1) | (y2 <= y1)
    bad |= np.isnan(width) | np.isnan(height)
    examples = list(joined["phrase_id"][bad][:5])
    return CheckOutcome(
        passed=not bad.any(),
        description=(
            f"{int(bad.sum())} phrase boxes are empty or outside their image (e.g. {examples})"
            if bad.any()
            else "every phrase box lies inside its image"
        ),
        details={"boxed_phrases": len(boxed), "bad": int(bad.sum())},
    )


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
