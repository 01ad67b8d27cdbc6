"""The chance level of phrase localization: the expected accuracy of picking one of the
image's proposals at random, which a grounding model must beat."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ops.features.region_table import RegionTable, proposals_of
from ops.geometry import pairwise_iou
from ops.metrics.localization_rule import evaluable_phrases


def random_proposal_accuracy(
    phrases: pd.DataFrame, proposals: pd.DataFrame | RegionTable, iou_threshold: float
) -> float:
    """Expected accuracy (percent) of picking one of the image's proposals uniformly, correct
    at ``iou_threshold``: the chance level that a grounding model must beat."""
    boxed = phrases[evaluable_phrases(phrases, every_listed_type=False)]
    candidates = proposals_of(proposals, boxed["image_id"].unique())
    groups = {key: g for key, g in candidates.groupby("image_id", sort=False)}
    hits = []
    for image_id, image_phrases in boxed.groupby("image_id", sort=False):
        regions = groups.get(image_id)
        if regions is None:
            hits.extend([0.0] * len(image_phrases))
            continue
        iou = pairwise_iou(
            image_phrases[["gt_x1", "gt_y1", "gt_x2", "gt_y2"]].to_numpy(),
            regions[["x1", "y1", "x2", "y2"]].to_numpy(),
        )
        hits.extend((iou >= iou_threshold).mean(axis=1).tolist())
    return float(100.0 * np.mean(hits)) if hits else 0.0
