"""When a phrase counts as localized, and which phrases are scored at all.

Localized: its chosen box has IoU ≥ :data:`IOU_THRESHOLD` with the phrase's ground-truth
(union) box. The one declaration every stage reads: validation and test evaluation (through
the training setting ``localization_iou``, whose default this is), grounding accuracy, the
proposals' upper bound and the chance level.

Scored (:func:`evaluable_phrases`): a phrase that is visual and has a ground-truth box.

Torch-free and pandas-free at import, so that the settings models can read it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# The paper's (and Flickr30K Entities') accuracy criterion.
IOU_THRESHOLD = 0.5

# The type Flickr30K Entities gives a phrase that names nothing in the image (chain 0).
NOTVISUAL = "notvisual"
GROUND_TRUTH_COLUMNS = ("gt_x1", "gt_y1", "gt_x2", "gt_y2")


def listed_types(phrases: pd.DataFrame) -> pd.Series:
    """Every type a phrase lists (``all_types`` "a/b") or its first type alone."""
    if "all_types" in phrases.columns:
        return phrases["all_types"].fillna(phrases["phrase_type"]).astype(str).str.split("/")
    return phrases["phrase_type"].astype(str).map(lambda kind: [kind])


def is_notvisual(phrases: pd.DataFrame, *, every_listed_type: bool) -> np.ndarray:
    """Boolean mask of the ``notvisual`` phrases: judged on every listed type (``all_types``
    when present) or on the first type (``phrase_type``) alone."""
    if every_listed_type:
        return listed_types(phrases).map(lambda kinds: NOTVISUAL in kinds).to_numpy(dtype=bool)
    return (phrases["phrase_type"].astype(str) == NOTVISUAL).to_numpy(dtype=bool)


def has_ground_truth(phrases: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the phrases with a ground-truth box (no NaN among ``gt_x1..gt_y2``)."""
    return phrases[list(GROUND_TRUTH_COLUMNS)].notna().all(axis=1).to_numpy(dtype=bool)


def evaluable_phrases(phrases: pd.DataFrame, *, every_listed_type: bool) -> np.ndarray:
    """Boolean mask of the phrases localization scores: visual, with a ground-truth box.
    ``every_listed_type`` as in :func:`is_notvisual`."""
    return ~is_notvisual(phrases, every_listed_type=every_listed_type) & has_ground_truth(phrases)
