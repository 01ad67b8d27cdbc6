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
