"""Evaluation assets: retrieval (single- and two-stage) and phrase localization on the test
split, written to the DuckDB result tables, one set of rows per training run."""

import time

import dagster as dg
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from assets.metadata import png, preview  # noqa: E402
from assets.partitions import DATASETS  # noqa: E402
from assets.resources import ComputeSettings, TwobranchStorage  # noqa: E402
from assets.skips import skip_reason, skipped_output  # noqa: E402
from ops.dataset_store import load_dataset_table  # noqa: E402
from ops.evaluation import (  # noqa: E402
    evaluate_localization,
    evaluate_retrieval_single,
    evaluate_retrieval_two_stage,
    protocols_for,
    random_proposal_accuracy,
)
from ops.results_store import publish_catalogue, write_result  # noqa: E402
from ops.training_inputs import image_sentence_splits, phrase_region_splits  # noqa: E402

EVALUATION_GROUP = "evaluation"


class RetrievalEvalConfig(dg.Config):
    """``rerank_k``: candidates per query that the similarity network rescores in two-stage
    retrieval (0 turns two-stage off)."""

    rerank_k: int = 20
    split: str = "test"


def recall_at_k_curve(ranks: pd.DataFrame, max_k: int = 50) -> dict[str, list[float]]:
    ks = np.arange(1, max_k + 1)
    curves = {}
    for (method, direction), group in ranks.groupby(["method", "direction"]):
        values = np.sort(group["rank"].to_numpy())
        curves[f"{method} {direction}"] = (
            100.0 * np.searchsorted(values, ks, side="right") / len(values)
        ).tolist()
    return curves


def recall_plot(curves: dict[str, list[float]]):
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    for label, values in sorted(curves.items()):
        axis.plot(range(1, len(values) + 1), values, label=label)
    axis.set_xlabel("K")
    axis.set_ylabel("Recall@K (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


@dg.asset(group_name=EVALUATION_GROUP, kinds={"pytorch", "duckdb"}, partitions_def=DATASETS)
def retrieval_eval(
    context: dg.AssetExecutionContext,
    config: RetrievalEvalConfig,
    image_sentence_embedding_net: dict,
    image_sentence_similarity_net: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """Recall@1/5/10 both directions, median/mean rank and R-sum of the models it is given,
    per protocol; two-stage retrieval reranks the embedding network's top-k with the
    similarity network. Per-query ranks go to ``retrieval_ranks``."""
    started = time.perf_counter()
    root = storage.root
    runs = [image_sentence_embedding_net, image_sentence_similarity_net]
    features = image_sentence_embedding_net["features"]
    split = image_sentence_splits(
        features["image_features"], features["text_features"], (config.split,)
    )[config.split]
    dataset = image_sentence_embedding_net["dataset"]
    protocols = protocols_for(len(split.image_ids))
    metric_rows: dict[str, list[dict]] = {run["run_id"]: [] for run in runs}
    rank_rows: dict[str, list[pd.DataFrame]] = {run["run_id"]: [] for run in runs}
    timings = {}
    for protocol in protocols:
        evaluations = [
            (
                run["run_id"],
                evaluate_retrieval_single(run["checkpoint"], split, protocol, compute.device),
            )
            for run in runs
        ]
        if config.rerank_k > 0:
            evaluations.append(
                (
                    image_sentence_similarity_net["run_id"],
                    evaluate_retrieval_two_stage(
                        image_sentence_embedding_net["checkpoint"],
                        image_sentence_similarity_net["checkpoint"],
                        split,
                        protocol,
                        k=config.rerank_k,
                        device_name=compute.device,
                    ),
                )
            )
        for run_id, evaluation in evaluations:
            for row in evaluation.result.metrics:
                metric_rows[run_id].append(
                    {
                        "run_id": run_id,
                        "dataset": dataset,
                        "split": config.split,
                        "method": evaluation.method,
                    }
                    | row
                )
            rank_rows[run_id].append(
                evaluation.result.ranks.assign(run_id=run_id, method=evaluation.method)
            )
            timings[f"{evaluation.method} {protocol} ms/query"] = round(
                1000 * evaluation.seconds_per_query, 3
            )
    for run_id in metric_rows:
        write_result(root, "retrieval_metrics", run_id, pd.DataFrame(metric_rows[run_id]))
        write_result(root, "retrieval_ranks", run_id, pd.concat(rank_rows[run_id]))
    publish_catalogue(root)
    metrics = pd.DataFrame([r for rows in metric_rows.values() for r in rows])
    network_of = {run["run_id"]: run["network"] for run in runs}
    metrics.insert(1, "network", metrics["run_id"].map(network_of))
    summary = metrics[metrics["fold"] <= 0][
        ["network", "method", "protocol", "direction", "r1", "r5", "r10", "median_rank", "rsum"]
    ]
    ranks = pd.concat([pd.concat(v) for v in rank_rows.values()], ignore_index=True)
    ranks["method"] = ranks["run_id"].map(network_of) + " " + ranks["method"]
    curves = recall_at_k_curve(ranks[ranks["protocol"] == protocols[0]])
    figure = recall_plot(curves)
    plot = png(figure)
    plt.close(figure)
    context.log.info("\n" + summary.round(2).to_string(index=False))
    return dg.Output(
        {
            "dataset": dataset,
            "split": config.split,
            "protocols": protocols,
            "runs": {run["network"]: run["run_id"] for run in runs},
            "metrics": summary.to_dict("records"),
            "recall_curves": curves,
            "n_images": len(split.image_ids),
            "n_captions": len(split.caption_ids),
        },
        metadata={
            "metrics": preview(summary.round(2), rows=50),
            "recall_at_k": plot,
            "timings": dg.MetadataValue.json(timings),
            "rows": len(split.image_ids) + len(split.caption_ids),  # queries, both directions
            "seconds": round(time.perf_counter() - started, 2),
            "test_images": len(split.image_ids),
            "test_captions": len(split.caption_ids),
        },
    )


@dg.asset(group_name=EVALUATION_GROUP, kinds={"pytorch", "duckdb"}, partitions_def=DATASETS)
def localization_eval(
    context: dg.AssetExecutionContext,
    phrase_region_embedding_net: dict,
    phrase_region_similarity_net: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """Phrase localization accuracy (top-1 proposal at IoU ≥ 0.5 with the ground truth),
    with the proposals' upper bound, per phrase type, for the models it is given."""
    if reason := skip_reason(phrase_region_embedding_net, phrase_region_similarity_net):
        return skipped_output(phrase_region_embedding_net["dataset"], reason)
    started = time.perf_counter()
    root = storage.root
    runs = [phrase_region_embedding_net, phrase_region_similarity_net]
    dataset = phrase_region_embedding_net["dataset"]
    features = phrase_region_embedding_net["features"]
    phrases = load_dataset_table(root, dataset, "phrases")
    proposals = pd.read_parquet(features["region_proposals"])
    split = phrase_region_splits(
        features["region_features"], proposals, features["phrase_features"], phrases, ("test",)
    )["test"]
    test_phrases = phrases[phrases["phrase_id"].isin(set(split.phrase_ids))]
    chance = random_proposal_accuracy(test_phrases, proposals)
    rows, per_type_tables = [], {}
    for run in runs:
        evaluation = evaluate_localization(
            run["checkpoint"], split, phrases, proposals, compute.device
        )
        summary = evaluation.summary
        per_type = evaluation.per_type
        metric_rows = [
            {
                "phrase_type": "all",
                "accuracy": summary["accuracy"],
                "upper_bound": summary["upper_bound"],
                "n_phrases": summary["n_phrases"],
            }
        ] + per_type.to_dict("records")
        frame = pd.DataFrame(metric_rows).assign(
            run_id=run["run_id"], dataset=dataset, split="test"
        )
        write_result(root, "localization_metrics", run["run_id"], frame)
        write_result(
            root,
            "localization_results",
            run["run_id"],
            evaluation.per_phrase.assign(run_id=run["run_id"]),
        )
        rows.append(
            {
                "network": run["network"],
                "run_id": run["run_id"],
                "accuracy": summary["accuracy"],
                "upper_bound": summary["upper_bound"],
                "random_proposal": chance,
                "n_phrases": summary["n_phrases"],
            }
        )
        per_type_tables[run["network"]] = per_type
    publish_catalogue(root)
    table = pd.DataFrame(rows)
    context.log.info("\n" + table.round(2).to_string(index=False))
    per_type_all = pd.concat(
        [t.assign(network=n) for n, t in per_type_tables.items()], ignore_index=True
    )
    return dg.Output(
        {
            "dataset": dataset,
            "runs": {run["network"]: run["run_id"] for run in runs},
            "summary": table.to_dict("records"),
            "per_type": per_type_all.to_dict("records"),
            "random_proposal_accuracy": chance,
        },
        metadata={
            "summary": preview(table.round(2)),
            "per_type": preview(per_type_all.round(2), rows=40),
            "random_proposal_accuracy": round(chance, 2),
            "rows": len(split.phrase_ids),  # test phrases, each a query
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


EVALUATION_ASSETS = [retrieval_eval, localization_eval]
