"""Phrase localization accuracy (Flickr30K Entities protocol).

A phrase is localized correctly when its chosen box has IoU ≥ a threshold with the ground truth
(:data:`IOU_THRESHOLD`, the paper's 0.5: the one declaration every stage's default reads). The
ground truth of a phrase with several boxes is their union box, computed upstream by the
dataset loader (``gt_x1..gt_y2`` of the phrases table); phrases of type ``notvisual`` and
phrases without a box are excluded and counted apart. Boxes are 0-based with exclusive
right/bottom edges, so a box's area is ``(x2 - x1) · (y2 - y1)``. Accuracies and upper
bounds are percentages (0–100), like the recalls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ops.geometry import matched_iou, pairwise_iou
from ops.metrics.localization_rule import (
    GROUND_TRUTH_COLUMNS,
    IOU_THRESHOLD,
    evaluable_phrases,
    is_notvisual,
    listed_types,
)
from ops.metrics.proposal_coverage import BOX_COLUMNS, covered_by_proposals

PHRASE_TYPES = (
    "people",
    "clothing",
    "bodyparts",
    "animals",
    "vehicles",
    "instruments",
    "scene",
    "other",
)
GT_COLUMNS = list(GROUND_TRUTH_COLUMNS)
PER_PHRASE_COLUMNS = ["phrase_id", "phrase_type", "chosen_region_id", "iou", "correct"]
PER_TYPE_COLUMNS = ["phrase_type", "n_phrases", "accuracy", "upper_bound"]


def _as_boxes(boxes: np.ndarray | list, name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if np.any(array[:, 2] < array[:, 0]) or np.any(array[:, 3] < array[:, 1]):
        raise ValueError(f"{name} holds a box with x2 < x1 or y2 < y1")
    return array


def box_iou(a: np.ndarray | list, b: np.ndarray | list) -> np.ndarray:
    """``(n, m)`` IoU of every box in ``a`` with every box in ``b`` (rows ``x1, y1, x2, y2``)."""
    return pairwise_iou(_as_boxes(a, "a"), _as_boxes(b, "b"))


def paired_iou(a: np.ndarray | list, b: np.ndarray | list) -> np.ndarray:
    """``(n,)`` IoU of ``a[i]`` with ``b[i]``."""
    first, second = _as_boxes(a, "a"), _as_boxes(b, "b")
    if len(first) != len(second):
        raise ValueError(f"paired_iou needs equal lengths, got {len(first)} and {len(second)}")
    return matched_iou(torch.from_numpy(first), torch.from_numpy(second)).numpy()


@dataclass
class GroundingResult:
    """``summary``: accuracy, upper_bound (percent; None without proposals), n_phrases
    (evaluated), n_excluded (= n_notvisual + n_no_box), n_unpredicted (evaluated phrases
    without a prediction, counted wrong). ``per_type``: phrase_type, n_phrases, accuracy,
    upper_bound. ``per_phrase``: rows of ``localization_results`` (phrase_id, phrase_type,
    chosen_region_id, iou, correct)."""

    summary: dict[str, float | int | None]
    per_type: pd.DataFrame
    per_phrase: pd.DataFrame


def _chosen_boxes_from_regions(
    evaluated: pd.DataFrame, proposals: pd.DataFrame, chosen_region: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Each phrase's chosen region id (None when unpredicted) and its box (NaN then)."""
    region_of_phrase = chosen_region.dropna()
    if pd.api.types.is_float_dtype(region_of_phrase) and (region_of_phrase % 1 == 0).all():
        # Integer ids that went through a float column (pandas does that to ints with NaN).
        region_of_phrase = region_of_phrase.astype(np.int64)
    # Region ids are matched as strings, whatever their stored type.
    region_of_phrase = region_of_phrase.astype(object).map(str)
    region_of_phrase.index = region_of_phrase.index.astype(str)
    if region_of_phrase.index.has_duplicates:
        duplicate = region_of_phrase.index[region_of_phrase.index.duplicated()][0]
        raise ValueError(f"chosen_region names phrase {duplicate} more than once")
    chosen = evaluated["phrase_id"].map(region_of_phrase)
    keyed = proposals.assign(
        image_id=proposals["image_id"].astype(str), region_id=proposals["region_id"].astype(str)
    ).set_index(["image_id", "region_id"])
    if keyed.index.has_duplicates:
        image_id, region_id = keyed.index[keyed.index.duplicated()][0]
        raise ValueError(f"proposals list region {region_id} of image {image_id} twice")
    boxes = np.full((len(evaluated), 4), np.nan)
    predicted = chosen.notna().to_numpy()
    if predicted.any():
        lookup = pd.MultiIndex.from_arrays(
            [
                evaluated["image_id"].astype(str).to_numpy()[predicted],
                chosen[predicted].astype(str).to_numpy(),
            ]
        )
        found = keyed.index.get_indexer(lookup)
        if (found < 0).any():
            missing = int(np.flatnonzero(found < 0)[0])
            phrase_id = evaluated["phrase_id"].to_numpy()[predicted][missing]
            raise ValueError(
                f"phrase {phrase_id}: chosen region {lookup[missing][1]} is not a proposal "
                f"of image {lookup[missing][0]}"
            )
        boxes[predicted] = keyed[BOX_COLUMNS].to_numpy(np.float64)[found]
    region_ids = np.where(predicted, chosen.to_numpy(dtype=object), None)
    return region_ids, boxes


def _chosen_boxes_given(evaluated: pd.DataFrame, chosen_boxes: pd.DataFrame) -> np.ndarray:
    frame = chosen_boxes
    if "phrase_id" in frame.columns:
        frame = frame.set_index("phrase_id")
    frame = frame[BOX_COLUMNS]
    frame.index = frame.index.astype(str)
    if frame.index.has_duplicates:
        duplicate = frame.index[frame.index.duplicated()][0]
        raise ValueError(f"chosen_boxes names phrase {duplicate} more than once")
    _as_boxes(frame.to_numpy(np.float64), "chosen_boxes")
    return frame.reindex(evaluated["phrase_id"].astype(str)).to_numpy(np.float64)


def _percent(hits: np.ndarray) -> float:
    return float(100.0 * hits.mean()) if len(hits) else float("nan")


def evaluate_grounding(
    phrases: pd.DataFrame,
    proposals: pd.DataFrame | None = None,
    chosen_region: pd.Series | None = None,
    chosen_boxes: pd.DataFrame | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> GroundingResult:
    """Localization accuracy of one choice per phrase.

    ``phrases``: phrase_id, image_id, phrase_type (optionally all_types, then a phrase counts
    toward each listed type), gt_x1..gt_y2 (NaN when boxless). ``proposals``: image_id,
    region_id, x1, y1, x2, y2. The choice is either ``chosen_region`` (Series phrase_id →
    region_id of that phrase's image) or ``chosen_boxes`` (phrase_id and x1..y2, or indexed by
    phrase_id). A phrase without a choice counts as wrong. The upper bound needs proposals.
    """
    if (chosen_region is None) == (chosen_boxes is None):
        raise ValueError("give exactly one of chosen_region and chosen_boxes")
    if chosen_region is not None and proposals is None:
        raise ValueError("chosen_region needs the proposals it indexes")
    missing = [c for c in ["phrase_id", "image_id", "phrase_type", *GT_COLUMNS] if c not in phrases]
    if missing:
        raise ValueError(f"phrases lack columns {missing}")
    if proposals is not None:
        lacking = [c for c in ["image_id", "region_id", *BOX_COLUMNS] if c not in proposals]
        if lacking:
            raise ValueError(f"proposals lack columns {lacking}")
    if phrases["phrase_id"].astype(str).duplicated().any():
        raise ValueError("phrases repeat a phrase_id")

    types = listed_types(phrases)
    notvisual = is_notvisual(phrases, every_listed_type=True)
    keep = evaluable_phrases(phrases, every_listed_type=True)
    no_box = ~keep & ~notvisual
    evaluated = phrases.loc[keep].reset_index(drop=True)
    evaluated_types = types[keep].reset_index(drop=True)
    gt = _as_boxes(evaluated[GT_COLUMNS].to_numpy(np.float64), "ground-truth boxes")

    if chosen_region is not None:
        assert proposals is not None
        region_ids, boxes = _chosen_boxes_from_regions(evaluated, proposals, chosen_region)
    else:
        assert chosen_boxes is not None
        boxes = _chosen_boxes_given(evaluated, chosen_boxes)
        region_ids = np.full(len(evaluated), None, dtype=object)
    predicted = ~np.isnan(boxes).any(axis=1)
    iou = np.full(len(evaluated), np.nan)
    if predicted.any():
        iou[predicted] = paired_iou(boxes[predicted], gt[predicted])
    correct = predicted & (np.nan_to_num(iou, nan=0.0) >= iou_threshold)
    upper = (
        None
        if proposals is None
        else covered_by_proposals(
            evaluated["image_id"].astype(str).to_numpy(),
            gt,
            proposals["image_id"].astype(str).to_numpy(),
            _as_boxes(proposals[BOX_COLUMNS].to_numpy(np.float64), "proposals"),
            iou_threshold,
        )
    )

    per_phrase = pd.DataFrame(
        {
            "phrase_id": evaluated["phrase_id"].astype(str).to_numpy(),
            "phrase_type": evaluated["phrase_type"].astype(str).to_numpy(),
            "chosen_region_id": region_ids,
            "iou": iou,
            "correct": correct,
        },
        columns=PER_PHRASE_COLUMNS,
    )
    summary: dict[str, float | int | None] = {
        "accuracy": _percent(correct),
        "upper_bound": None if upper is None else _percent(upper),
        "n_phrases": int(len(evaluated)),
        "n_excluded": int((~keep).sum()),
        "n_notvisual": int(notvisual.sum()),
        "n_no_box": int(no_box.sum()),
        "n_unpredicted": int((~predicted).sum()),
    }
    return GroundingResult(summary, _per_type(evaluated_types, correct, upper), per_phrase)


def _per_type(types: pd.Series, correct: np.ndarray, upper: np.ndarray | None) -> pd.DataFrame:
    exploded = pd.DataFrame(
        {
            "phrase_type": types.to_numpy(),
            "correct": correct,
            "upper": upper if upper is not None else np.zeros(len(correct), dtype=bool),
        }
    ).explode("phrase_type")
    present = list(dict.fromkeys(exploded["phrase_type"]))
    order = [kind for kind in PHRASE_TYPES if kind in present]
    order += sorted(kind for kind in present if kind not in PHRASE_TYPES)
    rows = []
    for kind in order:
        group = exploded[exploded["phrase_type"] == kind]
        rows.append(
            {
                "phrase_type": kind,
                "n_phrases": int(len(group)),
                "accuracy": _percent(group["correct"].to_numpy(bool)),
                "upper_bound": None if upper is None else _percent(group["upper"].to_numpy(bool)),
            }
        )
    return pd.DataFrame(rows, columns=PER_TYPE_COLUMNS)
