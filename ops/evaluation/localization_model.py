"""A trained phrase-region network's localization of the test phrases: its top-1 proposal
per phrase, scored against the ground-truth boxes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ops.features.region_table import RegionTable, proposals_of
from ops.metrics.grounding import evaluate_grounding
from ops.training.inputs import PhraseRegionSplit
from ops.training.placement import DeviceFeatures
from ops.training.trained_model import load_two_branch
from ops.training.validate import predict_phrase_regions


@dataclass
class LocalizationEvaluation:
    summary: dict
    per_type: pd.DataFrame
    per_phrase: pd.DataFrame
    seconds: float
    iou_threshold: float


@torch.no_grad()
def evaluate_localization(
    checkpoint: str | Path,
    split: PhraseRegionSplit,
    phrases: pd.DataFrame,
    proposals: pd.DataFrame | RegionTable,
    device_name: str = "auto",
) -> LocalizationEvaluation:
    """Top-1 proposal per test phrase, correct at IoU ≥ the run's ``localization_iou`` (the
    paper: 0.5) with the phrase's (union) box: the threshold its validation used."""
    trained = load_two_branch(checkpoint, device_name)
    trained.check_feature_dims(split.data.image_dim, split.data.text_dim)
    config = trained.config
    started = time.perf_counter()
    predictions = predict_phrase_regions(
        trained.network,
        split.data,
        DeviceFeatures.of(split.data, trained.device),
        config.network,
        chunk=config.eval_chunk,
        amp=config.amp,
        iou_threshold=config.localization_iou,
    )
    chosen = pd.Series(
        np.where(
            predictions.chosen_region >= 0,
            split.region_ids[np.maximum(predictions.chosen_region, 0)].astype(object),
            None,
        ),
        index=split.phrase_ids,
    )
    evaluated = phrases[phrases["phrase_id"].isin(set(split.phrase_ids))]
    image_proposals = proposals_of(proposals, split.image_ids)
    result = evaluate_grounding(
        evaluated, image_proposals, chosen_region=chosen, iou_threshold=config.localization_iou
    )
    return LocalizationEvaluation(
        result.summary,
        result.per_type,
        result.per_phrase,
        time.perf_counter() - started,
        config.localization_iou,
    )
