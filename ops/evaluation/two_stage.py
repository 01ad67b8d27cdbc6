"""Two-stage retrieval: the embedding network's top-k candidates per query rescored by
``embedding score + w × similarity score``, with ``w`` chosen on the validation split.

The rest of the candidates keep the embedding network's order below the top-k. With ``w = 0``
the ranking is the embedding network's own, so the grid of weights always holds 0 and the
chosen weight never scores below single-stage on the split it was chosen on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ops.device import autocast_context, resolve_device
from ops.evaluation.single_stage import RetrievalEvaluation, split_embeddings, split_ids
from ops.metrics.retrieval_protocols import (
    ProtocolResult,
    evaluate_protocol_source,
    protocol_folds,
)
from ops.metrics.score_sources import ScoreSource, default_chunk
from ops.training.inputs import ImageSentenceSplit
from ops.training.trained_model import load_two_branch


@dataclass(frozen=True)
class FoldCandidates:
    """One fold's first-stage candidates in both directions and their similarity scores.

    ``i2t``: per image row, its top-``k`` caption columns (``n_images × k``); ``t2i``: per
    caption column, its top-``k`` image rows (``k × n_captions``). ``*_first`` hold their
    embedding scores, ``*_rescore`` the similarity network's, and ``low``/``high`` bound every
    embedding score of the fold."""

    image_emb: torch.Tensor
    text_emb: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    i2t: torch.Tensor
    i2t_first: torch.Tensor
    i2t_rescore: torch.Tensor
    t2i: torch.Tensor
    t2i_first: torch.Tensor
    t2i_rescore: torch.Tensor


class TwoStageSource(ScoreSource):
    """Scores of one fold whose ranking along ``dim`` (1: per image over captions, 0: per
    caption over images) is the embedding's top-``k`` by ``embedding + weight × similarity``,
    then every other candidate in the embedding's order, shifted below them. Blocks are
    computed from the embeddings as the ranking engine asks; no fold-sized matrix is kept."""

    def __init__(self, fold: FoldCandidates, dim: int, weight: float) -> None:
        self.fold = fold
        self.dim = dim
        self.device = fold.image_emb.device
        self.n_images = int(fold.image_emb.shape[0])
        self.n_captions = int(fold.text_emb.shape[0])
        first, rescore = (
            (fold.i2t_first, fold.i2t_rescore) if dim == 1 else (fold.t2i_first, fold.t2i_rescore)
        )
        self.chosen = first + weight * rescore
        gap = (fold.high - fold.low) + 1.0
        self.gap = gap + (first - self.chosen).abs().max() if first.numel() else gap

    def block(self, start: int, stop: int) -> torch.Tensor:
        scores = self.fold.image_emb @ self.fold.text_emb[start:stop].T - self.gap
        if self.dim == 0:
            columns = torch.arange(stop - start, device=self.device).expand_as(
                self.fold.t2i[:, start:stop]
            )
            scores[self.fold.t2i[:, start:stop], columns] = self.chosen[:, start:stop]
            return scores
        inside = (self.fold.i2t >= start) & (self.fold.i2t < stop)
        rows = torch.arange(self.n_images, device=self.device)[:, None].expand_as(inside)
        scores[rows[inside], self.fold.i2t[inside] - start] = self.chosen[inside]
        return scores


@torch.no_grad()
def fold_candidates(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    sim_model: torch.nn.Module,
    sim_image: torch.Tensor,
    sim_text: torch.Tensor,
    k: int,
    amp: bool,
) -> FoldCandidates:
    """Each query's top-``k`` within the fold, from one sweep over blocks of caption columns
    (a running top-k per image, a block top-k per caption), then one batch of similarity
    scores for the union of candidate pairs."""
    n_images, n_captions = image_emb.shape[0], text_emb.shape[0]
    device = image_emb.device
    k_images, k_captions = min(k, n_images), min(k, n_captions)
    step = default_chunk(n_images, device)
    low = high = None
    i2t_first = torch.empty(n_images, 0, device=device)
    i2t = torch.empty(n_images, 0, dtype=torch.long, device=device)
    t2i_parts, t2i_first_parts = [], []
    for start in range(0, n_captions, step):
        block = image_emb @ text_emb[start : start + step].T
        block_low, block_high = block.min(), block.max()
        low = block_low if low is None else torch.minimum(low, block_low)
        high = block_high if high is None else torch.maximum(high, block_high)
        top = block.topk(k_images, dim=0)
        t2i_parts.append(top.indices)
        t2i_first_parts.append(top.values)
        merged_values = torch.cat([i2t_first, block], dim=1)
        merged_index = torch.cat(
            [i2t, torch.arange(start, start + block.shape[1], device=device).expand_as(block)],
            dim=1,
        )
        best = merged_values.topk(min(k_captions, merged_values.shape[1]), dim=1)
        i2t_first, i2t = best.values, merged_index.gather(1, best.indices)
    t2i, t2i_first = torch.cat(t2i_parts, dim=1), torch.cat(t2i_first_parts, dim=1)
    captions = torch.arange(n_captions, device=device).repeat(t2i.shape[0])
    images = torch.arange(n_images, device=device).repeat_interleave(i2t.shape[1])
    pairs = torch.cat(
        [
            torch.stack([t2i.reshape(-1), captions], dim=1),
            torch.stack([images, i2t.reshape(-1)], dim=1),
        ]
    )
    pairs, position = torch.unique(pairs, dim=0, return_inverse=True)
    with autocast_context(device, amp):
        pair_scores = sim_model.score_candidates(sim_image, sim_text, pairs).float()
    n_t2i = t2i.numel()
    assert low is not None and high is not None
    return FoldCandidates(
        image_emb=image_emb,
        text_emb=text_emb,
        low=low,
        high=high,
        i2t=i2t,
        i2t_first=i2t_first,
        i2t_rescore=pair_scores[position[n_t2i:]].view_as(i2t_first),
        t2i=t2i,
        t2i_first=t2i_first,
        t2i_rescore=pair_scores[position[:n_t2i]].view_as(t2i_first),
    )


@dataclass
class TwoStageCandidates:
    """Both networks' embeddings of one split; each protocol fold's candidates are found in
    the fold's own scores (so every query re-ranks ``k`` candidates of its fold) and kept for
    the weights tried on them."""

    image_emb: torch.Tensor
    text_emb: torch.Tensor
    sim_model: torch.nn.Module
    sim_image: torch.Tensor
    sim_text: torch.Tensor
    k: int
    amp: bool
    seconds: float
    folds: dict[tuple[int, int], FoldCandidates] = field(default_factory=dict)

    def fold(self, first: int, last: int, captions: np.ndarray) -> FoldCandidates:
        if (first, last) not in self.folds:
            started = time.perf_counter()
            rows = torch.from_numpy(captions).to(self.text_emb.device)
            self.folds[first, last] = fold_candidates(
                self.image_emb[first:last],
                self.text_emb[rows],
                self.sim_model,
                self.sim_image[first:last],
                self.sim_text[rows],
                self.k,
                self.amp,
            )
            self.seconds += time.perf_counter() - started
        return self.folds[first, last]

    def evaluate(
        self, split: ImageSentenceSplit, protocol: str, weight: float, fold_size: int = 1000
    ) -> ProtocolResult:
        results = [
            evaluate_protocol_source(
                lambda first, last, captions, dim=dim: TwoStageSource(
                    self.fold(first, last, captions), dim, weight
                ),
                len(split.image_ids),
                split.data.caption_image,
                protocol,
                fold_size=fold_size,
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
    """Embed ``split`` with both networks; candidates are found per protocol fold when a
    protocol is evaluated."""
    device = resolve_device(device_name)
    embedding = load_two_branch(embedding_checkpoint, device)
    similarity = load_two_branch(similarity_checkpoint, device)
    for trained in (embedding, similarity):
        trained.check_feature_dims(split.data.image_dim, split.data.text_dim)
    image_emb, text_emb = split_embeddings(embedding, split)
    started = time.perf_counter()
    sim_image, sim_text = split_embeddings(similarity, split)
    return TwoStageCandidates(
        image_emb=image_emb,
        text_emb=text_emb,
        sim_model=similarity.network,
        sim_image=sim_image,
        sim_text=sim_text,
        k=k,
        amp=similarity.config.amp,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class WeightChoice:
    """The weight chosen on a split, and every weight's R-sum there (weight 0 = single-stage)."""

    weight: float
    table: pd.DataFrame  # weight, rsum, chosen
    tuned_protocol: str = "all"  # the validation protocol the R-sums are under


def tuning_protocol(protocol: str, n_images: int, fold_size: int = 1000) -> str:
    """The validation protocol a weight for test protocol ``protocol`` is chosen under: the
    same one when the validation split has the images it needs, else all of validation."""
    try:
        protocol_folds(protocol, n_images, fold_size)
    except ValueError:
        return "all"
    return protocol


def choose_weight(
    candidates: TwoStageCandidates,
    split: ImageSentenceSplit,
    weights: Sequence[float],
    protocol: str = "all",
    fold_size: int = 1000,
) -> WeightChoice:
    """The weight (0 always among them) with the highest R-sum on ``split`` under
    ``protocol`` (the folds' mean for ``5fold_1k``); on a tie the smallest weight wins."""
    grid = sorted({0.0, *(float(w) for w in weights)})
    rows = []
    for weight in grid:
        metrics = pd.DataFrame(candidates.evaluate(split, protocol, weight, fold_size).metrics)
        summary = metrics[metrics["fold"] == metrics["fold"].min()]
        rows.append({"weight": weight, "rsum": float(summary["rsum"].iloc[0])})
    table = pd.DataFrame(rows)
    best = int(table["rsum"].to_numpy().argmax())  # first maximum: the smallest weight
    table["chosen"] = table.index == best
    return WeightChoice(float(table["weight"].iloc[best]), table, protocol)


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
