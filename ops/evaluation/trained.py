"""Evaluation of trained networks on the test split: retrieval (single- and two-stage) and
phrase localization, as rows of the DESIGN.md result tables."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ops.device import autocast_context
from ops.features.region_table import RegionTable
from ops.geometry import pairwise_iou
from ops.metrics.grounding import evaluate_grounding
from ops.metrics.localization_rule import evaluable_phrases
from ops.metrics.retrieval_protocols import (
    ProtocolResult,
    evaluate_protocol,
    evaluate_protocol_source,
)
from ops.metrics.score_sources import MatrixSource, ScoreSource
from ops.training.data import DeviceFeatures
from ops.training.inputs import ImageSentenceSplit, PhraseRegionSplit
from ops.training.trained_model import EMBED_CHUNK, TrainedTwoBranch, load_two_branch
from ops.training.validate import embed_rows, predict_phrase_regions


@dataclass
class RetrievalEvaluation:
    method: str
    result: ProtocolResult
    seconds: float
    seconds_per_query: float


def protocols_for(n_images: int) -> list[str]:
    """The field's protocols for a test set of ``n_images``: COCO-sized sets are reported as
    the mean of five 1K folds and on the whole 5K; a 1K set as ``1k``; others as ``all``."""
    if n_images >= 5000:
        return ["5fold_1k", "5k"]
    if n_images == 1000:
        return ["1k"]
    return ["all"]


@torch.no_grad()
def split_embeddings(
    trained: TrainedTwoBranch, split: ImageSentenceSplit
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and caption embeddings of ``split`` on the network's device."""
    model, amp = trained.network, trained.config.amp
    features = DeviceFeatures.of(split.data, trained.device)
    image_emb = embed_rows(model.embed_image, features.image_features, EMBED_CHUNK, amp)
    text_emb = embed_rows(model.embed_text, features.text_features, EMBED_CHUNK, amp)
    return image_emb, text_emb


# A fold's whole similarity-score matrix is computed once and ranked from memory up to this
# many scores (a 1K fold has 5 M); a larger fold (5K: 125 M) is scored block by block.
STORED_FOLD_SCORES = 1 << 25


class SimilaritySource(ScoreSource):
    """The similarity network's scores of one protocol fold, computed block by block through
    its head (about 65k pairs per call), so the fold's whole score matrix is never held."""

    def __init__(
        self, model: nn.Module, image_emb: torch.Tensor, text_emb: torch.Tensor, amp: bool
    ) -> None:
        self.model = model
        self.image_emb = image_emb
        self.text_emb = text_emb
        self.amp = amp
        self.device = image_emb.device
        self.n_images = int(image_emb.shape[0])
        self.n_captions = int(text_emb.shape[0])

    @torch.no_grad()
    def block(self, start: int, stop: int) -> torch.Tensor:
        with autocast_context(self.device, self.amp):
            scores = self.model.score_embedding_matrix(self.image_emb, self.text_emb[start:stop])
        return scores.float()

    @torch.no_grad()
    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Each caption's score with its own image, from row-aligned pairs: the head runs
        on other batch shapes than in the blocks, so the values may differ in their last
        bits (far more under bf16), which the tolerance covers."""
        parts = []
        step = 1 << 16
        with autocast_context(self.device, self.amp):
            for start in range(0, self.n_captions, step):
                images = self.image_emb[caption_image[start : start + step]]
                texts = self.text_emb[start : start + step]
                parts.append(self.model.score_embeddings(images, texts).float().reshape(-1))
        values = torch.cat(parts)
        scale = 1.0 + float(values.abs().max()) if values.numel() else 1.0
        return values, (1e-2 if self.amp and self.device.type == "cuda" else 1e-4) * scale


def similarity_fold_source(
    model: nn.Module, image_emb: torch.Tensor, text_emb: torch.Tensor, amp: bool
) -> ScoreSource:
    """The similarity network's scores of one fold: stored whole when the fold is small
    enough (ranked in one sweep), else computed block by block."""
    n_images, n_captions = int(image_emb.shape[0]), int(text_emb.shape[0])
    if n_images * n_captions > STORED_FOLD_SCORES:
        return SimilaritySource(model, image_emb, text_emb, amp)
    rows = max(1, (1 << 18) // max(1, n_captions))
    with torch.no_grad(), autocast_context(image_emb.device, amp):
        scores = model.score_embedding_matrix(image_emb, text_emb, rows).float()
    return MatrixSource(scores, image_emb.device)


def split_ids(split: ImageSentenceSplit) -> dict[str, np.ndarray]:
    return {"image_ids": split.image_ids, "caption_ids": split.caption_ids}


def evaluate_retrieval_single(
    checkpoint: str | Path, split: ImageSentenceSplit, protocol: str, device_name: str = "auto"
) -> RetrievalEvaluation:
    trained = load_two_branch(checkpoint, device_name)
    trained.check_feature_dims(split.data.image_dim, split.data.text_dim)
    model, config, device = trained.network, trained.config, trained.device
    started = time.perf_counter()
    image_emb, text_emb = split_embeddings(trained, split)
    caption_image = split.data.caption_image
    if config.network == "embedding":
        result = evaluate_protocol(
            image_emb, text_emb, caption_image, protocol, device=device, **split_ids(split)
        )
    else:
        result = evaluate_protocol_source(
            lambda first, last, captions: similarity_fold_source(
                model,
                image_emb[first:last],
                text_emb[torch.from_numpy(captions).to(device)],
                config.amp,
            ),
            len(split.image_ids),
            caption_image,
            protocol,
            **split_ids(split),
        )
    seconds = time.perf_counter() - started
    queries = len(split.image_ids) + len(split.caption_ids)
    return RetrievalEvaluation("single_stage", result, seconds, seconds / queries)


def merge_directions(i2t: ProtocolResult, t2i: ProtocolResult) -> ProtocolResult:
    """i2t rows from one evaluation and t2i rows from the other, with R-sum recomputed."""
    metrics = [m for m in i2t.metrics if m["direction"] == "i2t"]
    metrics += [m for m in t2i.metrics if m["direction"] == "t2i"]
    frame = pd.DataFrame(metrics)
    recall = frame[["r1", "r5", "r10"]].sum(axis=1)
    frame["rsum"] = recall.groupby([frame["protocol"], frame["fold"]]).transform("sum")
    ranks = pd.concat(
        [i2t.ranks[i2t.ranks["direction"] == "i2t"], t2i.ranks[t2i.ranks["direction"] == "t2i"]],
        ignore_index=True,
    )
    return ProtocolResult(metrics=frame.to_dict("records"), ranks=ranks)


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


def proposals_of(proposals: pd.DataFrame | RegionTable, image_ids: Iterable[str]) -> pd.DataFrame:
    """The ``source == "proposal"`` rows of ``image_ids`` (what localization chooses from)."""
    if isinstance(proposals, RegionTable):
        return proposals.proposal_frame(image_ids)
    return proposals[
        proposals["image_id"].isin(set(image_ids)) & (proposals["source"] == "proposal")
    ]


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
