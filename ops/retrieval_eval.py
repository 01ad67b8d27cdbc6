"""Retrieval evaluation of a lineage's two image–sentence networks: single-stage for each,
two-stage (embedding top-k reranked by the similarity network), per protocol, as rows of
``retrieval_metrics`` / ``retrieval_ranks`` plus a summary and Recall@K curves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ops.evaluation import (
    RetrievalEvaluation,
    evaluate_retrieval_single,
    evaluate_retrieval_two_stage,
    protocols_for,
)
from ops.results_store import publish_catalogue, write_result
from ops.training_inputs import ImageSentenceSplit, image_sentence_splits

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

    def output(self) -> dict[str, Any]:
        """The JSON-ready summary that downstream steps (the report) read."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "protocols": self.protocols,
            "runs": self.runs,
            "metrics": self.summary.to_dict("records"),
            "recall_curves": self.curves,
            "n_images": self.n_images,
            "n_captions": self.n_captions,
        }


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
    embedding_run: Mapping,
    similarity_run: Mapping,
    split: ImageSentenceSplit,
    protocol: str,
    rerank_k: int,
    device: str,
) -> list[tuple[str, RetrievalEvaluation]]:
    evaluations = [
        (run["run_id"], evaluate_retrieval_single(run["checkpoint"], split, protocol, device))
        for run in (embedding_run, similarity_run)
    ]
    if rerank_k > 0:
        two_stage = evaluate_retrieval_two_stage(
            embedding_run["checkpoint"],
            similarity_run["checkpoint"],
            split,
            protocol,
            k=rerank_k,
            device_name=device,
        )
        evaluations.append((similarity_run["run_id"], two_stage))
    return evaluations


def evaluate_retrieval_runs(
    embedding_run: Mapping,
    similarity_run: Mapping,
    split_name: str = "test",
    rerank_k: int = 20,
    device: str = "auto",
) -> RetrievalEvalResult:
    """Evaluate two training-run manifests (as ``run_training`` returns them) on
    ``split_name`` of the embedding run's feature files; ``rerank_k`` = 0 skips two-stage."""
    runs = [embedding_run, similarity_run]
    features = embedding_run["features"]
    split = image_sentence_splits(
        features["image_features"], features["text_features"], (split_name,)
    )[split_name]
    dataset = embedding_run["dataset"]
    protocols = protocols_for(len(split.image_ids))
    metric_rows: dict[str, list[dict]] = {run["run_id"]: [] for run in runs}
    rank_rows: dict[str, list[pd.DataFrame]] = {run["run_id"]: [] for run in runs}
    timings = {}
    for protocol in protocols:
        for run_id, evaluation in _evaluations(
            embedding_run, similarity_run, split, protocol, rerank_k, device
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
    network_of = {run["run_id"]: run["network"] for run in runs}
    metrics = pd.DataFrame([r for rows in metric_rows.values() for r in rows])
    metrics.insert(1, "network", metrics["run_id"].map(network_of))
    ranks = pd.concat([pd.concat(v) for v in rank_rows.values()], ignore_index=True)
    ranks["method"] = ranks["run_id"].map(network_of) + " " + ranks["method"]
    return RetrievalEvalResult(
        dataset=dataset,
        split=split_name,
        protocols=protocols,
        runs={run["network"]: run["run_id"] for run in runs},
        metrics={run_id: pd.DataFrame(rows) for run_id, rows in metric_rows.items()},
        ranks={run_id: pd.concat(frames) for run_id, frames in rank_rows.items()},
        timings=timings,
        summary=metrics[metrics["fold"] <= 0][SUMMARY_COLUMNS],
        curves=recall_at_k_curve(ranks[ranks["protocol"] == protocols[0]]),
        n_images=len(split.image_ids),
        n_captions=len(split.caption_ids),
    )


def store_retrieval_results(root: Path, result: RetrievalEvalResult) -> None:
    """Replace each run's rows in ``retrieval_metrics`` and ``retrieval_ranks``."""
    for run_id, frame in result.metrics.items():
        write_result(root, "retrieval_metrics", run_id, frame)
        write_result(root, "retrieval_ranks", run_id, result.ranks[run_id])
    publish_catalogue(root)
