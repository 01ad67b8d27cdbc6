"""Phrase localization evaluation of a lineage's two phrase–region networks on the test split,
as rows of ``localization_metrics`` / ``localization_results`` plus summary tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ops.data.dataset_store import load_dataset_table
from ops.evaluation.chance_level import random_proposal_accuracy
from ops.evaluation.localization_model import evaluate_localization
from ops.features.region_table import region_table
from ops.handoffs import LocalizationEvalSummary, TrainedModel
from ops.storage.input_fingerprints import check_trained_inputs
from ops.storage.results_store import publish_catalogue, write_result
from ops.training.inputs import phrase_region_splits


@dataclass(frozen=True)
class LocalizationEvalResult:
    dataset: str
    runs: dict[str, str]  # network → run_id
    metrics: dict[str, pd.DataFrame]  # run_id → localization_metrics rows (all + per type)
    per_phrase: dict[str, pd.DataFrame]  # run_id → localization_results rows
    summary: pd.DataFrame  # one row per network
    per_type: pd.DataFrame  # accuracy per phrase type and network
    random_proposal_accuracy: float
    n_phrases: int  # test phrases, each a query

    def output(self) -> LocalizationEvalSummary:
        """The JSON-ready summary that downstream steps (the report) read."""
        return LocalizationEvalSummary(
            dataset=self.dataset,
            runs=self.runs,
            summary=self.summary.to_dict("records"),
            per_type=self.per_type.to_dict("records"),
            random_proposal_accuracy=self.random_proposal_accuracy,
        )


def evaluate_localization_runs(
    embedding_run: TrainedModel, similarity_run: TrainedModel, root: Path, device: str = "auto"
) -> LocalizationEvalResult:
    """Evaluate two trained models on the test split of the embedding run's features,
    beside the chance level of picking a random proposal. A run whose input files changed
    since it was trained is refused (``InputsChanged``)."""
    runs = [embedding_run, similarity_run]
    for run in runs:
        check_trained_inputs(run, "evaluated")
    dataset = embedding_run.dataset
    features = embedding_run.features
    phrases = load_dataset_table(root, dataset, "phrases")
    proposals = region_table(features["region_proposals"])
    split = phrase_region_splits(
        features["region_features"], proposals, features["phrase_features"], phrases, ("test",)
    )["test"]
    test_phrases = phrases[phrases["phrase_id"].isin(set(split.phrase_ids))]
    # The chance level at each run's own threshold (its localization_iou).
    chance_at: dict[float, float] = {}
    metrics, per_phrase, rows, per_type_tables = {}, {}, [], {}
    for run in runs:
        evaluation = evaluate_localization(run.checkpoint, split, phrases, proposals, device)
        threshold = evaluation.iou_threshold
        if threshold not in chance_at:
            chance_at[threshold] = random_proposal_accuracy(test_phrases, proposals, threshold)
        chance = chance_at[threshold]
        summary = evaluation.summary
        overall = {
            "phrase_type": "all",
            "accuracy": summary["accuracy"],
            "upper_bound": summary["upper_bound"],
            "n_phrases": summary["n_phrases"],
        }
        metrics[run.run_id] = pd.DataFrame(
            [overall] + evaluation.per_type.to_dict("records")
        ).assign(run_id=run.run_id, dataset=dataset, split="test")
        per_phrase[run.run_id] = evaluation.per_phrase.assign(run_id=run.run_id)
        rows.append(
            {
                "network": run.network,
                "run_id": run.run_id,
                "accuracy": summary["accuracy"],
                "upper_bound": summary["upper_bound"],
                "random_proposal": chance,
                "n_phrases": summary["n_phrases"],
            }
        )
        per_type_tables[run.network] = evaluation.per_type
    return LocalizationEvalResult(
        dataset=dataset,
        runs={run.network: run.run_id for run in runs},
        metrics=metrics,
        per_phrase=per_phrase,
        summary=pd.DataFrame(rows),
        per_type=pd.concat(
            [t.assign(network=n) for n, t in per_type_tables.items()], ignore_index=True
        ),
        random_proposal_accuracy=next(iter(chance_at.values())),
        n_phrases=len(split.phrase_ids),
    )


def store_localization_results(root: Path, result: LocalizationEvalResult) -> None:
    """Replace each run's rows in ``localization_metrics`` and ``localization_results``."""
    for run_id, frame in result.metrics.items():
        write_result(root, "localization_metrics", run_id, frame)
        write_result(root, "localization_results", run_id, result.per_phrase[run_id])
    publish_catalogue(root)
