"""Retrieval evaluation of a lineage's two image–sentence networks: single-stage for each,
two-stage (embedding top-k rescored by embedding + w × similarity, w chosen on the
validation split), and the embedding network's sentence-to-sentence retrieval (``t2t``), per
protocol, as rows of ``retrieval_metrics`` / ``retrieval_ranks`` and ``two_stage_weights``
plus a summary and Recall@K curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ops.evaluation.settings import RetrievalEvalSettings
from ops.evaluation.single_stage import (
    RetrievalEvaluation,
    evaluate_retrieval_single,
    split_embeddings,
)
from ops.evaluation.two_stage import (
    TwoStageCandidates,
    WeightChoice,
    choose_weight,
    evaluate_two_stage,
    tuning_protocol,
    two_stage_candidates,
)
from ops.handoffs import RetrievalEvalSummary, TrainedModel
from ops.metrics.retrieval_protocols import protocols_for
from ops.metrics.sentence_retrieval import evaluate_sentence_protocol
from ops.storage.input_fingerprints import check_trained_inputs
from ops.storage.results_store import publish_catalogue, write_result
from ops.training.inputs import ImageSentenceSplit, image_sentence_splits
from ops.training.trained_model import load_two_branch

SUMMARY_COLUMNS = [
    "network",
    "method",
    "protocol",
    "direction",
    "r1",
    "r5",
    "r10",
    "median_rank",
    "rsum",
    "r_precision",
    "map_at_r",
]


@dataclass(frozen=True)
class RetrievalEvalResult:
    dataset: str
    split: str
    protocols: list[str]
    runs: dict[str, str]  # network → run_id
    metrics: dict[str, pd.DataFrame]  # run_id → retrieval_metrics rows
    ranks: dict[str, pd.DataFrame]  # run_id → retrieval_ranks rows
    timings: dict[str, float]  # "<method> <protocol> ms/query" → milliseconds
    summary: pd.DataFrame  # whole-set rows (no folds), one per network × method × direction
    curves: dict[str, list[float]] = field(repr=False)  # "<network> <method> <direction>"
    n_images: int = 0
    n_captions: int = 0
    # two_stage_weights rows (the weight search on validation); None without two-stage.
    weights: pd.DataFrame | None = None

    @property
    def two_stage(self) -> dict[str, Any] | None:
        """Single- vs two-stage on the validation split and the chosen weight, for the first
        protocol; ``per_protocol`` holds every protocol's weight."""
        if self.weights is None:
            return None
        first = self.weights[self.weights["protocol"] == self.protocols[0]]
        chosen = first[first["chosen"]].iloc[0]
        single = first[first["weight"] == 0.0].iloc[0]
        chosen_rows = self.weights[self.weights["chosen"]]
        return {
            "weight": float(chosen["weight"]),
            "protocol": str(chosen["protocol"]),
            "tuned_protocol": str(chosen["tuned_protocol"]),
            "per_protocol": dict(
                zip(chosen_rows["protocol"], chosen_rows["weight"].astype(float), strict=True)
            ),
            "rerank_k": int(chosen["rerank_k"]),
            "tuned_on": str(chosen["split"]),
            "val_rsum_single_stage": float(single["rsum"]),
            "val_rsum_two_stage": float(chosen["rsum"]),
            "grid": first[["weight", "rsum"]].to_dict("records"),
        }

    def output(self) -> RetrievalEvalSummary:
        """The JSON-ready summary that downstream steps (the report) read."""
        return RetrievalEvalSummary(
            dataset=self.dataset,
            split=self.split,
            protocols=self.protocols,
            runs=self.runs,
            # JSON has no NaN: a metric a direction lacks (t2t has no R-Precision) is null.
            metrics=self.summary.astype(object)
            .where(self.summary.notna(), None)
            .to_dict("records"),
            recall_curves=self.curves,
            n_images=self.n_images,
            n_captions=self.n_captions,
            two_stage=self.two_stage,
        )


def recall_at_k_curve(ranks: pd.DataFrame, max_k: int = 50) -> dict[str, list[float]]:
    """Recall@K (percent) for K = 1..``max_k`` per (method, direction) of ``ranks``."""
    ks = np.arange(1, max_k + 1)
    curves = {}
    for (method, direction), group in ranks.groupby(["method", "direction"]):
        values = np.sort(group["rank"].to_numpy())
        curves[f"{method} {direction}"] = (
            100.0 * np.searchsorted(values, ks, side="right") / len(values)
        ).tolist()
    return curves


def _evaluations(
    embedding_run: TrainedModel,
    similarity_run: TrainedModel,
    split: ImageSentenceSplit,
    protocol: str,
    two_stage: tuple[TwoStageCandidates, Mapping[str, float]] | None,
    device: str,
) -> list[tuple[str, RetrievalEvaluation]]:
    evaluations = [
        (run.run_id, evaluate_retrieval_single(run.checkpoint, split, protocol, device))
        for run in (embedding_run, similarity_run)
    ]
    if two_stage is not None:
        candidates, weights = two_stage
        evaluation = evaluate_two_stage(candidates, split, protocol, weights[protocol])
        evaluations.append((similarity_run.run_id, evaluation))
    return evaluations


def sentence_retrieval_rows(
    checkpoint: str | Path, split: ImageSentenceSplit, protocols: Sequence[str], device: str
) -> list[dict]:
    """The embedding network's sentence-to-sentence (``t2t``) rows under each protocol."""
    _, text_emb = split_embeddings(load_two_branch(checkpoint, device), split)
    return [
        row
        for protocol in protocols
        for row in evaluate_sentence_protocol(
            text_emb, split.data.caption_image, len(split.image_ids), protocol
        )
    ]


def tune_two_stage(
    embedding_run: TrainedModel,
    similarity_run: TrainedModel,
    split_name: str,
    rerank_k: int,
    weights: Sequence[float],
    device: str,
    protocols: Sequence[str],
) -> dict[str, WeightChoice]:
    """Per test protocol, the similarity score's weight with the best R-sum on
    ``split_name`` (the validation split) of the embedding run's feature files, under that
    protocol where the split has the images for it (else all of the split); weight 0
    (single-stage) is always tried."""
    features = embedding_run.features
    split = image_sentence_splits(
        features["image_features"], features["text_features"], (split_name,)
    ).get(split_name)
    if split is None:
        raise ValueError(f"two-stage retrieval needs a {split_name!r} split to choose its weight")
    candidates = two_stage_candidates(
        embedding_run.checkpoint, similarity_run.checkpoint, split, rerank_k, device
    )
    tuned = {protocol: tuning_protocol(protocol, len(split.image_ids)) for protocol in protocols}
    choices = {
        under: choose_weight(candidates, split, weights, under) for under in set(tuned.values())
    }
    return {protocol: choices[under] for protocol, under in tuned.items()}


def evaluate_retrieval_runs(
    embedding_run: TrainedModel,
    similarity_run: TrainedModel,
    settings: RetrievalEvalSettings,
    *,
    device: str,
) -> RetrievalEvalResult:
    """Evaluate two trained models (as ``run_training`` returns them) on
    ``settings.split`` of the embedding run's feature files, under ``settings.protocols``
    (empty: the field's protocols for the split's size). Two-stage retrieval (``rerank_k`` >
    0; 0 skips it) uses the weight among ``two_stage_weights`` that scores best on
    ``tune_split``. A run whose input files changed since it was trained is refused
    (``InputsChanged``)."""
    split_name, rerank_k, tune_split = settings.split, settings.rerank_k, settings.tune_split
    weights = settings.two_stage_weights
    runs = [embedding_run, similarity_run]
    for run in runs:
        check_trained_inputs(run, "evaluated")
    features = embedding_run.features
    split = image_sentence_splits(
        features["image_features"], features["text_features"], (split_name,)
    )[split_name]
    dataset = embedding_run.dataset
    protocols = list(settings.protocols) or protocols_for(len(split.image_ids))
    metric_rows: dict[str, list[dict]] = {run.run_id: [] for run in runs}
    rank_rows: dict[str, list[pd.DataFrame]] = {run.run_id: [] for run in runs}
    timings = {}
    two_stage, weight_rows = None, None
    if rerank_k > 0:
        choices = tune_two_stage(
            embedding_run, similarity_run, tune_split, rerank_k, weights, device, protocols
        )
        candidates = two_stage_candidates(
            embedding_run.checkpoint, similarity_run.checkpoint, split, rerank_k, device
        )
        two_stage = (candidates, {p: choice.weight for p, choice in choices.items()})
        weight_rows = pd.concat(
            [
                choice.table.assign(
                    run_id=similarity_run.run_id,
                    embedding_run_id=embedding_run.run_id,
                    dataset=dataset,
                    split=tune_split,
                    rerank_k=rerank_k,
                    protocol=protocol,
                    tuned_protocol=choice.tuned_protocol,
                )
                for protocol, choice in choices.items()
            ],
            ignore_index=True,
        )
    for protocol in protocols:
        for run_id, evaluation in _evaluations(
            embedding_run, similarity_run, split, protocol, two_stage, device
        ):
            for row in evaluation.result.metrics:
                ids = {"run_id": run_id, "dataset": dataset, "split": split_name}
                metric_rows[run_id].append(ids | {"method": evaluation.method} | row)
            rank_rows[run_id].append(
                evaluation.result.ranks.assign(run_id=run_id, method=evaluation.method)
            )
            timings[f"{evaluation.method} {protocol} ms/query"] = round(
                1000 * evaluation.seconds_per_query, 3
            )
    embedding_rows = metric_rows[embedding_run.run_id]
    ids = {"run_id": embedding_run.run_id, "dataset": dataset, "split": split_name}
    for row in sentence_retrieval_rows(embedding_run.checkpoint, split, protocols, device):
        embedding_rows.append(ids | {"method": "single_stage"} | row)
    network_of = {run.run_id: run.network for run in runs}
    metrics = pd.DataFrame([r for rows in metric_rows.values() for r in rows])
    metrics.insert(1, "network", metrics["run_id"].map(network_of))
    ranks = pd.concat([pd.concat(v) for v in rank_rows.values()], ignore_index=True)
    ranks["method"] = ranks["run_id"].map(network_of) + " " + ranks["method"]
    return RetrievalEvalResult(
        dataset=dataset,
        split=split_name,
        protocols=protocols,
        runs={run.network: run.run_id for run in runs},
        metrics={run_id: pd.DataFrame(rows) for run_id, rows in metric_rows.items()},
        ranks={run_id: pd.concat(frames) for run_id, frames in rank_rows.items()},
        timings=timings,
        summary=metrics[metrics["fold"] <= 0][SUMMARY_COLUMNS],
        curves=recall_at_k_curve(ranks[ranks["protocol"] == protocols[0]]),
        n_images=len(split.image_ids),
        n_captions=len(split.caption_ids),
        weights=weight_rows,
    )


def store_retrieval_results(root: Path, result: RetrievalEvalResult) -> None:
    """Replace each run's rows in ``retrieval_metrics`` and ``retrieval_ranks``, and the
    similarity run's two-stage weight search in ``two_stage_weights``."""
    for run_id, frame in result.metrics.items():
        write_result(root, "retrieval_metrics", run_id, frame)
        write_result(root, "retrieval_ranks", run_id, result.ranks[run_id])
    if result.weights is not None:
        similarity_run = result.runs["similarity"]
        write_result(root, "two_stage_weights", similarity_run, result.weights)
    publish_catalogue(root)
