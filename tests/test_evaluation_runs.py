"""Evaluation of a lineage's runs and the report's tables, without Dagster."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from ops.evaluation.retrieval import (
    evaluate_retrieval_runs,
    recall_at_k_curve,
    store_retrieval_results,
    tune_two_stage,
)
from ops.evaluation.settings import RetrievalEvalSettings as Settings
from ops.evaluation.single_stage import evaluate_retrieval_single
from ops.handoffs import TrainedModel
from ops.report.build import runs_table
from ops.storage.sql import run_query
from ops.training.config import TrainConfig
from ops.training.inputs import image_sentence_splits
from ops.training.run import run_training
from tests.feature_files import write_graph_for, write_image_sentence_features

TINY = {"hidden_dim": 32, "embed_dim": 16, "batch_images": 50, "similarity_batch": 50}


def test_recall_at_k_curve_hand_computed() -> None:
    ranks = pd.DataFrame(
        {
            "method": ["a"] * 4 + ["b"] * 2,
            "direction": ["t2i"] * 4 + ["i2t"] * 2,
            "rank": [1, 3, 3, 10, 2, 1],
        }
    )
    curves = recall_at_k_curve(ranks, max_k=4)
    assert curves == {"a t2i": [25.0, 25.0, 75.0, 75.0], "b i2t": [50.0, 100.0, 100.0, 100.0]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TrainedModel]]:
    folder = tmp_path_factory.mktemp("runs")
    inputs = write_image_sentence_features(folder / "features")
    graph = write_graph_for(folder / "data", inputs)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [
            run_training(
                folder / "data",
                "toy",
                inputs,
                TrainConfig(network=network, epochs=1, lr=1e-2, device="cpu", **TINY),
                graph,
            ).manifest
            for network in ("embedding", "similarity")
        ]
    finally:
        torch.set_num_threads(previous)
    return folder / "data", runs


def test_retrieval_of_both_runs_single_and_two_stage(trained) -> None:
    root, (embedding, similarity) = trained
    result = evaluate_retrieval_runs(embedding, similarity, Settings(rerank_k=5), device="cpu")

    assert result.protocols == ["all"] and (result.n_images, result.n_captions) == (40, 200)
    assert result.runs == {"embedding": embedding.run_id, "similarity": similarity.run_id}
    methods = {(row["network"], row["method"]) for row in result.summary.to_dict("records")}
    assert methods == {
        ("embedding", "single_stage"),
        ("similarity", "single_stage"),
        ("similarity", "two_stage_k5"),
    }
    directions = result.summary.groupby(["network", "method"])["direction"].agg(set).to_dict()
    assert directions == {
        ("embedding", "single_stage"): {"i2t", "t2i", "t2t"},
        ("similarity", "single_stage"): {"i2t", "t2i"},
        ("similarity", "two_stage_k5"): {"i2t", "t2i"},
    }
    t2t = result.summary[result.summary["direction"] == "t2t"].iloc[0]
    assert 0 <= t2t["r1"] <= t2t["r5"] <= t2t["r10"] <= 100 and t2t["median_rank"] >= 1
    assert set(result.curves) == {f"{n} {m} {d}" for n, m in methods for d in ("i2t", "t2i")}
    for label, curve in result.curves.items():
        assert len(curve) == 50 and curve == sorted(curve), label
        if label.endswith("t2i"):  # 40 candidate images: every caption's image is in the top 50
            assert curve[-1] == 100.0, label
    assert set(result.timings) == {
        "single_stage all ms/query",
        "two_stage_k5 all ms/query",
    }
    output = result.output()
    summary = result.summary.astype(object).where(result.summary.notna(), None)
    assert output.metrics == summary.to_dict("records")
    t2t_output = [row for row in output.metrics if row["direction"] == "t2t"]
    assert t2t_output[0]["r_precision"] is None
    assert output.recall_curves == result.curves

    store_retrieval_results(root, result)
    stored = run_query(root, "SELECT run_id, method, direction, r1, r10 FROM retrieval_metrics")
    assert len(stored) == 7 and set(stored["run_id"]) == set(result.runs.values())
    assert ((stored["r1"] >= 0) & (stored["r1"] <= stored["r10"])).all()
    ranks = run_query(root, "SELECT count(*) AS n FROM retrieval_ranks")
    assert ranks["n"][0] == 3 * (40 + 200)  # every query, both directions, three methods

    no_rerank = evaluate_retrieval_runs(embedding, similarity, Settings(rerank_k=0), device="cpu")
    assert set(no_rerank.summary["method"]) == {"single_stage"}
    assert no_rerank.output().two_stage is None


def test_two_stage_weight_is_chosen_on_validation_and_never_below_single_stage(trained) -> None:
    root, (embedding, similarity) = trained
    features = embedding.features
    val = image_sentence_splits(features["image_features"], features["text_features"], ("val",))
    single = evaluate_retrieval_single(embedding.checkpoint, val["val"], "all", "cpu")
    single_rsum = pd.DataFrame(single.result.metrics)["rsum"].iloc[0]
    for weights in ((0.1, 1.0, 10.0), (1e3,), ()):
        (choice,) = tune_two_stage(
            embedding, similarity, "val", 10, weights, device="cpu", protocols=("all",)
        ).values()
        table = choice.table
        assert table["weight"].tolist() == sorted({0.0, *weights})
        assert table["chosen"].sum() == 1 and choice.weight in table["weight"].tolist()
        # Weight 0 is the embedding network alone, exactly.
        single_stage_rsum = table.loc[table["weight"] == 0.0, "rsum"].iloc[0]
        chosen_rsum = table.loc[table["chosen"], "rsum"].iloc[0]
        assert single_stage_rsum == pytest.approx(single_rsum, abs=1e-9)
        assert chosen_rsum >= single_stage_rsum
        assert chosen_rsum == table["rsum"].max()
        assert table.loc[table["chosen"], "weight"].iloc[0] == choice.weight

    result = evaluate_retrieval_runs(
        embedding, similarity, Settings(rerank_k=10, two_stage_weights=[0.1, 1.0]), device="cpu"
    )
    two_stage = result.output().two_stage
    assert two_stage["tuned_on"] == "val" and two_stage["rerank_k"] == 10
    assert two_stage["val_rsum_two_stage"] >= two_stage["val_rsum_single_stage"]
    assert [row["weight"] for row in two_stage["grid"]] == [0.0, 0.1, 1.0]
    store_retrieval_results(root, result)
    stored = run_query(root, "SELECT * FROM two_stage_weights WHERE chosen")
    assert stored["weight"].tolist() == [two_stage["weight"]]
    assert stored["run_id"].tolist() == [similarity.run_id]
    assert stored["embedding_run_id"].tolist() == [embedding.run_id]


def test_runs_table_one_row_per_run(trained) -> None:
    _, runs = trained
    table = runs_table(runs)
    assert table["network"].tolist() == ["embedding", "similarity"]
    assert table["champion"].tolist() == ["yes", "yes"]
    assert list(table.columns) == [
        "task",
        "network",
        "run_id",
        "device",
        "processes",
        "best_epoch",
        "best validation score",
        "validated on",
        "champion",
        "why",
    ]
    assert table["validated on"].tolist() == ["R-sum on all 40 images"] * 2
