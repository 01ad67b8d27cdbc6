"""How many phrases a proposal set can localize at all: the upper bound on accuracy that the
candidate boxes put, whatever the model chooses among them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ops.geometry import pairwise_iou
from ops.metrics.localization_rule import GROUND_TRUTH_COLUMNS, IOU_THRESHOLD, evaluable_phrases

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


def covered_by_proposals(
    phrase_images: np.ndarray,
    phrase_boxes: np.ndarray,
    proposal_images: np.ndarray,
    proposal_boxes: np.ndarray,
    iou_threshold: float,
) -> np.ndarray:
    """Per phrase: whether any proposal of its image reaches ``iou_threshold`` with its
    ground-truth box. Images are matched by id (``*_images``, one per row); one IoU matrix per
    image, so memory follows the largest image, not the dataset."""
    proposal_order = np.argsort(proposal_images, kind="stable")
    unique_ids, starts, counts = np.unique(
        proposal_images[proposal_order], return_index=True, return_counts=True
    )
    where = {
        image_id: proposal_order[start : start + count]
        for image_id, start, count in zip(unique_ids, starts, counts, strict=True)
    }
    covered = np.zeros(len(phrase_images), dtype=bool)
    order = np.argsort(phrase_images, kind="stable")
    phrase_ids, phrase_starts = np.unique(phrase_images[order], return_index=True)
    # No phrases at all gives no starts, and so no ends either.
    phrase_ends = np.append(phrase_starts[1:], len(order))[: len(phrase_starts)]
    for image_id, start, end in zip(phrase_ids, phrase_starts, phrase_ends, strict=True):
        candidates = where.get(image_id)
        if candidates is None:
            continue
        rows = order[start:end]
        iou = pairwise_iou(phrase_boxes[rows], proposal_boxes[candidates])
        covered[rows] = (iou >= iou_threshold).any(axis=1)
    return covered


def proposal_upper_bound(phrases: pd.DataFrame, proposals: pd.DataFrame) -> pd.DataFrame:
    """Per split: share of boxed, visual phrases with a proposal at IoU ≥ the localization
    threshold (:data:`~ops.metrics.localization_rule.IOU_THRESHOLD`).

    Only ``source == "proposal"`` rows count, so added ground truth never inflates the bound.
    Columns: ``split, phrases, covered, upper_bound``.
    """
    scored = phrases[evaluable_phrases(phrases, every_listed_type=False)]
    candidates = proposals[proposals["source"].astype(str) == "proposal"]
    covered = covered_by_proposals(
        scored["image_id"].astype(str).to_numpy(),
        scored[list(GROUND_TRUTH_COLUMNS)].to_numpy(dtype=np.float64),
        candidates["image_id"].astype(str).to_numpy(),
        candidates[BOX_COLUMNS].to_numpy(dtype=np.float64),
        IOU_THRESHOLD,
    )
    table = pd.DataFrame({"split": scored["split"].astype(str).to_numpy(), "covered": covered})
    summary = table.groupby("split", sort=True)["covered"].agg(["size", "sum"]).reset_index()
    summary.columns = ["split", "phrases", "covered"]
    summary["covered"] = summary["covered"].astype("int64")
    summary["upper_bound"] = summary["covered"] / summary["phrases"]
    return summary
