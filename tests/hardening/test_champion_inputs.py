"""A model is bound to the files it was trained on: when its text features are refitted, it is
neither evaluated nor indexed on the new ones, and a run trained on them becomes champion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from assets.evaluation import RetrievalEvalConfig, retrieval_eval
from assets.resources import ComputeSettings, TwobranchStorage
from ops.evaluation.retrieval import evaluate_retrieval_runs
from ops.evaluation.settings import RetrievalEvalSettings
from ops.handoffs import NeighborhoodGraphFile, Skipped
from ops.search.index_build import build_retrieval_index
from ops.storage.input_fingerprints import InputsChanged, file_fingerprint
from ops.storage.sql import run_query
from ops.training.config import TrainConfig
from ops.training.run import TrainingRun, run_training
from tests.feature_files import write_graph_for, write_image_sentence_features

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"hidden_dim": 32, "embed_dim": 16, "batch_images": 50, "margin": 0.2, "device": "cpu"}
# Other seeds: the same ids and dimensions, other values (a new vocabulary or PCA).
REFIT = {"train": (120, 10), "val": (40, 11), "test": (40, 12)}


def _champion(tmp_path: Path) -> tuple[Path, dict[str, str], NeighborhoodGraphFile, TrainingRun]:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    graph = write_graph_for(tmp_path / "graph", inputs)
    run = run_training(root, "toy", inputs, TrainConfig(**TINY, lr=1e-2, epochs=2), graph)
    assert run.manifest.champion
    return root, inputs, graph, run


def _refit_text_features(tmp_path: Path, inputs: dict[str, str]) -> None:
    refit = write_image_sentence_features(tmp_path / "refit", REFIT)
    before = file_fingerprint(inputs["text_features"])
    os.replace(refit["text_features"], inputs["text_features"])
    assert file_fingerprint(inputs["text_features"]) != before


def test_a_run_on_refitted_features_replaces_the_champion_trained_on_the_old_ones(
    tmp_path: Path,
) -> None:
    root, inputs, graph, champion = _champion(tmp_path)
    _refit_text_features(tmp_path, inputs)
    # A near-frozen model: on its own score it would not beat the champion.
    challenger = run_training(
        root,
        "toy",
        inputs,
        TrainConfig(**TINY, lr=1e-7, epochs=1, apply_lr_decay=False),
        graph,
    ).manifest
    assert challenger.best_val_score < champion.manifest.best_val_score
    assert challenger.champion
    reason = challenger.champion_reason
    assert f"champion {champion.manifest.run_id} was trained on other inputs" in reason
    assert "(text_features changed)" in reason and "only model trained on the current" in reason
    row = run_query(root, "SELECT run_id, inputs, reason FROM champions").iloc[0]
    assert row["run_id"] == challenger.run_id and row["reason"] == reason
    assert json.loads(row["inputs"]) == challenger.fingerprints
    assert challenger.fingerprints["text_features"] == file_fingerprint(inputs["text_features"])
    assert challenger.fingerprints["neighborhood_graph"] == file_fingerprint(graph.path)
    recorded = run_query(
        root, f"SELECT features FROM training_runs WHERE run_id = '{challenger.run_id}'"
    )["features"][0]
    assert json.loads(recorded)["fingerprints"] == challenger.fingerprints


def test_a_model_is_not_evaluated_or_indexed_on_features_it_never_saw(tmp_path: Path) -> None:
    root, inputs, _, champion = _champion(tmp_path)
    manifest = champion.manifest
    scored = evaluate_retrieval_runs(
        manifest, manifest, RetrievalEvalSettings(rerank_k=0), device="cpu"
    )
    assert len(scored.summary) > 0  # on its own features it is evaluated
    _refit_text_features(tmp_path, inputs)
    with pytest.raises(InputsChanged) as refused:
        evaluate_retrieval_runs(manifest, manifest, RetrievalEvalSettings(rerank_k=0), device="cpu")
    message = str(refused.value)
    assert f"run {manifest.run_id} was trained on inputs that have changed since" in message
    assert f"text_features ({inputs['text_features']})" in message
    assert "image_features" not in message and "Retrain" in message
    with pytest.raises(InputsChanged, match=r"not indexed on features it never saw"):
        build_retrieval_index(root, "toy", device="cpu")


def test_the_evaluation_step_says_why_it_waits_for_retraining(tmp_path: Path) -> None:
    root, inputs, _, champion = _champion(tmp_path)
    _refit_text_features(tmp_path, inputs)
    output = retrieval_eval(
        context=dg.build_asset_context(),
        config=RetrievalEvalConfig(rerank_k=0),
        image_sentence_embedding_net=champion.manifest,
        image_sentence_similarity_net=champion.manifest,
        storage=TwobranchStorage(data_root=str(root)),
        compute=ComputeSettings(device="cpu"),
    )
    assert isinstance(output.value, Skipped) and output.value.dataset == "toy"
    assert "trained on inputs that have changed since" in output.value.reason
    assert output.metadata["skipped"].value == output.value.reason
    assert output.metadata["inputs_changed"].data == {"text_features": inputs["text_features"]}
    assert run_query(root, "SELECT count(*) AS n FROM retrieval_metrics")["n"][0] == 0
