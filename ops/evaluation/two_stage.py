"""Two-stage retrieval: the embedding network's top-k candidates per query rescored by
``embedding score + w × similarity score``, with ``w`` chosen on the validation split.

The rest of the candidates keep the embedding network's order below the top-k. With ``w = 0``
the ranking is the embedding network's own, so the grid of weights always holds 0 and the
chosen weight never scores below single-stage on the split it was chosen on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ops.device import autocast_context, resolve_device
from ops.evaluation.trained import (
    RetrievalEvaluation,
    check_feature_dims,
    load_trained,
    merge_directions,
    split_embeddings,
    split_ids,
)
from ops.metrics.retrieval_protocols import ProtocolResult, evaluate_protocol_scores
from ops.training.inputs import ImageSentenceSplit

# Weights of the similarity score tried on the validation split (logits are ~10× wider than
# the embedding's cosine scores, hence the small end of the grid).
DEFAULT_WEIGHTS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@torch.no_grad()
def two_stage_scores(
    embedding_scores: torch.Tensor, rescore: torch.Tensor, k: int, dim: int, weight: float
) -> torch.Tensor:
    """Scores whose ranking is: the embedding network's top-``k`` candidates per query (along
    ``dim``: 0 = per caption over images, 1 = per image over captions) by ``embedding + weight
    × rescore``, then every other candidate in the embedding's order. The top-k keep their
    embedding values at weight 0 (the others are shifted below them), so weight 0 ranks
    exactly as the embedding network does."""
    k = min(k, embedding_scores.shape[dim])
    top = embedding_scores.topk(k, dim=dim).indices
    chosen = embedding_scores.gather(dim, top) + weight * rescore.gather(dim, top)
    gap = (embedding_scores.max() - embedding_scores.min()) + 1.0
    gap = gap + (embedding_scores.gather(dim, top) - chosen).abs().max()
    return (embedding_scores - gap).scatter(dim, top, chosen)


@dataclass
class TwoStageCandidates:
    """One split's first-stage scores and the similarity network's scores of the candidate
    pairs (every query's top-``k``; zero elsewhere, never used)."""

    first: torch.Tensor
    rescore: torch.Tensor
    k: int
    seconds: float

    def evaluate(self, split: ImageSentenceSplit, protocol: str, weight: float) -> ProtocolResult:
        caption_image = split.data.caption_image
        device = self.first.device
        results = [
            evaluate_protocol_scores(
                two_stage_scores(self.first, self.rescore, self.k, dim, weight),
                caption_image,
                protocol,
                device=device,
                **split_ids(split),
            )
            for dim in (1, 0)
        ]
        return merge_directions(*results)


@torch.no_grad()
def two_stage_candidates(
    embedding_checkpoint: str | Path,
    similarity_checkpoint: str | Path,
    split: ImageSentenceSplit,
    k: int = 20,
    device_name: str = "auto",
) -> TwoStageCandidates:
    """Embed ``split`` with both networks, keep each query's top-``k`` by the embedding
    network and score those pairs with the similarity network (batched)."""
    device = resolve_device(device_name)
    embed_model, embed_config = load_trained(embedding_checkpoint, device)
    sim_model, sim_config = load_trained(similarity_checkpoint, device)
    for model, path in ((embed_model, embedding_checkpoint), (sim_model, similarity_checkpoint)):
        check_feature_dims(model, path, split.data.image_dim, split.data.text_dim)
    image_emb, text_emb = split_embeddings(embed_model, split, device, embed_config.amp)
    first = image_emb @ text_emb.T
    started = time.perf_counter()
    sim_image, sim_text = split_embeddings(sim_model, split, device, sim_config.amp)
    n_images, n_captions = first.shape
    t2i_top = first.topk(min(k, n_images), dim=0).indices  # (k, n_captions)
    i2t_top = first.topk(min(k, n_captions), dim=1).indices  # (n_images, k)
    captions = torch.arange(n_captions, device=device).repeat(t2i_top.shape[0])
    images = torch.arange(n_images, device=device).repeat_interleave(i2t_top.shape[1])
    pairs = torch.cat(
        [
            torch.stack([t2i_top.reshape(-1), captions], dim=1),
            torch.stack([images, i2t_top.reshape(-1)], dim=1),
        ]
    )
    pairs = torch.unique(pairs, dim=0)
    with autocast_context(device, sim_config.amp):
        pair_scores = sim_model.score_candidates(sim_image, sim_text, pairs).float()
    rescore = torch.zeros_like(first)
    rescore[pairs[:, 0], pairs[:, 1]] = pair_scores
    return TwoStageCandidates(first, rescore, k, time.perf_counter() - started)


@dataclass(frozen=True)
class WeightChoice:
    """The weight chosen on a split, and every weight's R-sum there (weight 0 = single-stage)."""

    weight: float
    table: pd.DataFrame  # weight, rsum, chosen

    @property
    def single_stage_rsum(self) -> float:
        return float(self.table.loc[self.table["weight"] == 0.0, "rsum"].iloc[0])

    @property
    def chosen_rsum(self) -> float:
        return float(self.table.loc[self.table["chosen"], "rsum"].iloc[0])


def choose_weight(
    candidates: TwoStageCandidates, split: ImageSentenceSplit, weights: Sequence[float]
) -> WeightChoice:
    """The weight (0 always among them) with the highest R-sum on ``split`` over all its
    images; on a tie the smallest weight wins."""
    grid = sorted({0.0, *(float(w) for w in weights)})
    rows = []
    for weight in grid:
        metrics = pd.DataFrame(candidates.evaluate(split, "all", weight).metrics)
        rows.append({"weight": weight, "rsum": float(metrics["rsum"].iloc[0])})
    table = pd.DataFrame(rows)
    best = int(table["rsum"].to_numpy().argmax())  # first maximum: the smallest weight
    table["chosen"] = table.index == best
    return WeightChoice(weight=float(table["weight"].iloc[best]), table=table)


def evaluate_two_stage(
    candidates: TwoStageCandidates, split: ImageSentenceSplit, protocol: str, weight: float
) -> RetrievalEvaluation:
    """Two-stage retrieval on ``split`` under ``protocol`` with the chosen ``weight``."""
    result = candidates.evaluate(split, protocol, weight)
    queries = len(split.image_ids) + len(split.caption_ids)
    return RetrievalEvaluation(
        f"two_stage_k{candidates.k}",
        result,
        candidates.seconds,
        candidates.seconds / queries,
    )
