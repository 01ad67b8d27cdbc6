"""A recorded training run without Dagster: the run row, its epochs, champion promotion and
a failed run's status, on small feature files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.graph.build import GraphSettings
from ops.handoffs import TrainedModel
from ops.storage.sql import run_query
from ops.training import run as run_module
from ops.training.config import RESUMABLE_CHANGES, DistributedSettings, TrainConfig
from ops.training.run import (
    EmptyTrainingSplit,
    GraphMismatch,
    TrainingRun,
    run_training,
    training_run_id,
)
from tests.feature_files import write_graph_for, write_image_sentence_features

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "hidden_dim": 32,
    "embed_dim": 16,
    "batch_images": 50,
    "margin": 0.2,
    "dropout": 0.1,
    "device": "cpu",
}


def _run(root: Path, inputs: dict, **values) -> TrainingRun:
    graph = write_graph_for(root.parent / "graph", inputs)
    return run_training(root, "toy", inputs, TrainConfig(**(TINY | values)), graph)


def _rsum_scope(images: int, max_images: int) -> dict:
    """A stored validation scope on the toy features' 40 validation images."""
    return {"images": images, "split_images": 40, "max_images": max_images, "protocol": "R-sum"}


def _runs(root: Path) -> dict[str, dict]:
    frame = run_query(root, "SELECT * FROM training_runs")
    return {row["run_id"]: row for row in frame.to_dict("records")}


def test_run_is_recorded_and_only_a_better_run_is_promoted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    messages: list[str] = []
    graph = write_graph_for(tmp_path / "graph", inputs)
    # A near-frozen model: the first one is champion whatever its score.
    frozen = _run(root, inputs, lr=1e-7, epochs=1, apply_lr_decay=False)
    assert frozen.manifest.champion and "first model" in frozen.manifest.champion_reason
    first = run_training(
        root, "toy", inputs, TrainConfig(**TINY, lr=1e-2, epochs=2), graph, log=messages.append
    )

    manifest = first.manifest
    assert manifest.best_val_score > frozen.manifest.best_val_score
    assert manifest.champion
    assert f"beats champion {frozen.manifest.run_id}" in manifest.champion_reason
    assert manifest.features == inputs and manifest.dataset == "toy"
    assert manifest.validation_scope == "R-sum on all 40 images"
    assert Path(manifest.checkpoint).is_file()
    assert first.rows == 120 * 5 and first.epochs_run == 2 and first.score_name == "R-sum"
    assert first.curves_png.startswith(b"\x89PNG")
    assert first.config["lr"] == 1e-2 and first.config["device"] == "cpu"
    assert any(m.startswith("epoch 2: loss") for m in messages)
    row = _runs(root)[manifest.run_id]
    assert row["status"] == "finished" and row["champion"]
    assert row["champion_reason"] == manifest.champion_reason
    assert json.loads(row["validation_scope"]) == _rsum_scope(images=40, max_images=0)
    assert row["best_epoch"] == manifest.best_epoch
    assert row["best_val_score"] == pytest.approx(manifest.best_val_score)
    assert row["finished_at"] is not None
    epochs = run_query(root, f"SELECT epoch FROM epoch_metrics WHERE run_id = '{row['run_id']}'")
    assert sorted(epochs["epoch"]) == [1, 2]

    # The near-frozen run asked for another epoch resumes, still validates worse: recorded,
    # but the champion stays.
    worse = _run(root, inputs, lr=1e-7, epochs=2, apply_lr_decay=False)
    assert worse.manifest.run_id == frozen.manifest.run_id
    assert worse.resumed_from_epoch == 1 and worse.epochs_run == 2
    assert worse.manifest.best_val_score < manifest.best_val_score
    assert not worse.manifest.champion
    assert "champion kept" in worse.manifest.champion_reason
    assert _runs(root)[frozen.manifest.run_id]["champion_reason"] == (
        worse.manifest.champion_reason
    )
    # Longer training continues the champion's run, validates better, and the champion's
    # row takes the better score.
    better = _run(root, inputs, lr=1e-2, epochs=5)
    assert better.manifest.run_id == manifest.run_id
    assert better.resumed_from_epoch == 2 and better.epochs_run == 5
    assert better.manifest.best_val_score > manifest.best_val_score
    assert better.manifest.champion
    assert "already the champion" in better.manifest.champion_reason
    champion = run_query(root, "SELECT run_id, val_score FROM champions").iloc[0]
    assert champion["run_id"] == manifest.run_id
    assert champion["val_score"] == pytest.approx(better.manifest.best_val_score)
    runs = _runs(root)
    assert {run_id for run_id, r in runs.items() if r["champion"]} == {manifest.run_id}
    assert {r["status"] for r in runs.values()} == {"finished"} and len(runs) == 2
    assert json.loads(runs[manifest.run_id]["config"])["epochs"] == 5

    # The same config on the same files is the same run: it resumes and stays champion.
    again = _run(root, inputs, lr=1e-2, epochs=5)
    assert again.manifest.run_id == better.manifest.run_id
    assert again.resumed_from_epoch == 5 and again.manifest.champion


def test_failed_run_is_recorded_as_failed(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(run_module, "train", broken)
    with pytest.raises(RuntimeError, match="device lost"):
        _run(root, inputs, epochs=1)
    (row,) = _runs(root).values()
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert not row["champion"] and row["checkpoint"] is None


def test_features_without_a_train_split_are_refused(tmp_path: Path) -> None:
    inputs = write_image_sentence_features(tmp_path / "features", {"test": (10, 0)})
    with pytest.raises(EmptyTrainingSplit, match="train split is empty"):
        _run(tmp_path / "data", inputs)
    assert not (tmp_path / "data").exists()


def test_a_changed_graph_setting_is_a_new_run(tmp_path: Path) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    config = TrainConfig(**TINY, epochs=1)
    paper = write_graph_for(tmp_path / "paper", inputs)
    knn = write_graph_for(tmp_path / "knn", inputs, GraphSettings(knn_k=2))
    iou = write_graph_for(tmp_path / "iou", inputs, GraphSettings(positive_iou=0.7))
    # The image–sentence edges do not depend on positive_iou, but the graph's identity does.
    assert len({paper.fingerprint, knn.fingerprint, iou.fingerprint}) == 3
    run_ids = {
        name: run_training(root, "toy", inputs, config, graph).manifest.run_id
        for name, graph in (("paper", paper), ("knn", knn), ("iou", iou))
    }
    assert len(set(run_ids.values())) == 3
    # Rebuilding the same graph keeps the run (it resumes rather than starting over).
    again = write_graph_for(tmp_path / "again", inputs)
    assert again.fingerprint == paper.fingerprint
    rerun = run_training(root, "toy", inputs, config, again)
    assert rerun.manifest.run_id == run_ids["paper"] and rerun.resumed_from_epoch == 1
    row = _runs(root)[run_ids["knn"]]
    assert json.loads(row["features"])["graph"]["settings"]["knn_k"] == 2


def test_knn_sentence_neighbors_train_from_the_graph_or_say_what_is_missing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    paper = write_graph_for(tmp_path / "paper", inputs)
    with pytest.raises(GraphMismatch, match="knn_k > 0"):
        run_training(root, "toy", inputs, TrainConfig(**TINY, knn_sentence_neighbors=True), paper)
    knn = write_graph_for(tmp_path / "knn", inputs, GraphSettings(knn_k=3))
    run = run_training(
        root, "toy", inputs, TrainConfig(**TINY, epochs=1, knn_sentence_neighbors=True), knn
    )
    assert run.manifest.best_val_score > 0
    with pytest.raises(GraphMismatch, match=r"negative_iou \(0.65\) must not exceed"):
        run_training(
            root, "toy", inputs, TrainConfig(task="phrase_region", negative_iou=0.65), paper
        )


def test_the_run_id_leaves_out_exactly_the_resumable_settings(tmp_path: Path) -> None:
    inputs = write_image_sentence_features(tmp_path / "features")
    graph = write_graph_for(tmp_path / "graph", inputs)
    config = TrainConfig(**TINY, epochs=2)

    def run_id(changed: TrainConfig, val_max_images: int = 0) -> str:
        return training_run_id("toy", inputs, changed, graph, val_max_images)

    resumable = {
        "epochs": 4,
        "early_stopping_patience": 9,
        "device": "cuda",
        "distributed": DistributedSettings(nproc_per_node=2),
    }
    assert set(resumable) == RESUMABLE_CHANGES
    for name, value in resumable.items():
        assert run_id(config.model_copy(update={name: value})) == run_id(config), name
    for name, value in {"lr": 5e-5, "seed": 1, "localization_iou": 0.6}.items():
        assert run_id(config.model_copy(update={name: value})) != run_id(config), name
    # The validation images pick the best epoch, so they are part of what the run trains.
    assert run_id(config, val_max_images=20) != run_id(config)


def test_champions_are_compared_only_within_a_like_validation_scope(tmp_path: Path) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    graph = write_graph_for(tmp_path / "graph", inputs)

    def train(val_max_images: int, **values) -> TrainedModel:
        config = TrainConfig(**(TINY | values))
        return run_training(
            root, "toy", inputs, config, graph, val_max_images=val_max_images
        ).manifest

    # A near-frozen champion validated on the first 20 of the 40 validation images.
    champion = train(20, lr=1e-7, epochs=1, apply_lr_decay=False)
    assert champion.champion and champion.validation_scope == "R-sum on 20 of 40 images"
    # A trained challenger validated on all 40: its higher R-sum is not comparable.
    unlike = train(0, lr=1e-2, epochs=2)
    assert unlike.best_val_score > champion.best_val_score
    assert not unlike.champion
    assert unlike.champion_reason == (
        "validation scope differs: R-sum on all 40 images against champion "
        f"{champion.run_id}'s R-sum on 20 of 40 images; not compared, champion kept"
    )
    recorded = _runs(root)[unlike.run_id]
    assert recorded["champion_reason"] == unlike.champion_reason
    assert json.loads(recorded["validation_scope"])["images"] == 40
    # The same training validated like the champion is compared, and wins.
    like = train(20, lr=1e-2, epochs=2)
    assert like.run_id != unlike.run_id
    assert like.champion
    assert f"beats champion {champion.run_id}" in like.champion_reason
    row = run_query(root, "SELECT run_id, validation_scope FROM champions").iloc[0]
    assert row["run_id"] == like.run_id
    assert json.loads(row["validation_scope"]) == _rsum_scope(images=20, max_images=20)


def test_a_run_asked_for_more_epochs_continues_and_ends_like_a_longer_run(
    tmp_path: Path,
) -> None:
    inputs = write_image_sentence_features(tmp_path / "features")
    graph = write_graph_for(tmp_path / "graph", inputs)
    config = TrainConfig(**TINY, lr=1e-2, epochs=4)
    straight = run_training(tmp_path / "straight", "toy", inputs, config, graph)

    staged = tmp_path / "staged"
    short = config.model_copy(update={"epochs": 2, "early_stopping_patience": 3})
    first = run_training(staged, "toy", inputs, short, graph)
    longer = run_training(staged, "toy", inputs, config, graph)

    assert first.manifest.run_id == longer.manifest.run_id == straight.manifest.run_id
    assert first.epochs_run == 2 and first.resumed_from_epoch is None
    assert longer.resumed_from_epoch == 2 and longer.epochs_run == 4
    query = "SELECT epoch, loss, val_score FROM epoch_metrics ORDER BY epoch"
    assert run_query(staged, query).to_dict("records") == run_query(
        tmp_path / "straight", query
    ).to_dict("records")
    assert longer.manifest.best_val_score == straight.manifest.best_val_score
    (row,) = _runs(staged).values()
    assert json.loads(row["config"])["epochs"] == 4 and row["status"] == "finished"
