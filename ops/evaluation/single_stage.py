"""Single-stage retrieval evaluation of a trained network on a split: its embeddings (and, for
the similarity network, its scores) ranked under one protocol."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ops.device import autocast_context
from ops.metrics.retrieval_protocols import (
    ProtocolResult,
    evaluate_protocol,
    evaluate_protocol_source,
)
from ops.metrics.score_sources import MatrixSource, ScoreSource
from ops.training.inputs import ImageSentenceSplit
from ops.training.placement import DeviceFeatures
from ops.training.trained_model import EMBED_CHUNK, TrainedTwoBranch, load_two_branch
from ops.training.validate import embed_rows


@dataclass
class RetrievalEvaluation:
    method: str
    result: ProtocolResult
    seconds: float
    seconds_per_query: float


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
