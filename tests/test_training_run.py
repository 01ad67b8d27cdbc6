"""A recorded training run without Dagster: the run row, its epochs, champion promotion and
a failed run's status, on small feature files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.graph.build import GraphSettings
from ops.storage.sql import run_query
from ops.training import run as run_module
from ops.training.config import TrainConfig
from ops.training.run import EmptyTrainingSplit, GraphMismatch, TrainingRun, run_training
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


def _runs(root: Path) -> dict[str, dict]:
    frame = run_query(root, "SELECT * FROM training_runs")
    return {row["run_id"]: row for row in frame.to_dict("records")}


def test_run_is_recorded_and_only_a_better_run_is_promoted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    inputs = write_image_sentence_features(tmp_path / "features")
    messages: list[str] = []
    graph = write_graph_for(tmp_path / "graph", inputs)
    first = run_training(
        root, "toy", inputs, TrainConfig(**TINY, lr=1e-2, epochs=2), graph, log=messages.append
    )

    manifest = first.manifest
    assert manifest["champion"] and "first model" in manifest["champion_reason"]
    assert manifest["features"] == inputs and manifest["dataset"] == "toy"
    assert Path(manifest["checkpoint"]).is_file()
    assert first.rows == 120 * 5 and first.epochs_run == 2 and first.score_name == "R-sum"
    assert first.curves_png.startswith(b"\x89PNG")
    assert first.config["lr"] == 1e-2 and first.config["device"] == "cpu"
    assert any(m.startswith("epoch 2: loss") for m in messages)
    row = _runs(root)[manifest["run_id"]]
    assert row["status"] == "finished" and row["champion"]
    assert row["best_epoch"] == manifest["best_epoch"]
    assert row["best_val_score"] == pytest.approx(manifest["best_val_score"])
    assert row["finished_at"] is not None
    epochs = run_query(root, f"SELECT epoch FROM epoch_metrics WHERE run_id = '{row['run_id']}'")
    assert sorted(epochs["epoch"]) == [1, 2]

    # A near-frozen model validates worse: recorded, but the champion stays.
    worse = _run(root, inputs, lr=1e-7, epochs=1, apply_lr_decay=False)
    assert worse.manifest["best_val_score"] < manifest["best_val_score"]
    assert not worse.manifest["champion"]
    assert "champion kept" in worse.manifest["champion_reason"]
    # Longer training validates better and takes over.
    better = _run(root, inputs, lr=1e-2, epochs=5)
    assert better.manifest["best_val_score"] > manifest["best_val_score"]
    assert better.manifest["champion"]
    assert f"beats champion {manifest['run_id']}" in better.manifest["champion_reason"]
    runs = _runs(root)
    assert {run_id for run_id, r in runs.items() if r["champion"]} == {better.manifest["run_id"]}
    assert {r["status"] for r in runs.values()} == {"finished"} and len(runs) == 3

    # The same config on the same files is the same run: it resumes and stays champion.
    again = _run(root, inputs, lr=1e-2, epochs=5)
    assert again.manifest["run_id"] == better.manifest["run_id"]
    assert again.resumed_from_epoch == 5 and again.manifest["champion"]


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
    assert len({paper["fingerprint"], knn["fingerprint"], iou["fingerprint"]}) == 3
    run_ids = {
        name: run_training(root, "toy", inputs, config, graph).manifest["run_id"]
        for name, graph in (("paper", paper), ("knn", knn), ("iou", iou))
    }
    assert len(set(run_ids.values())) == 3
    # Rebuilding the same graph keeps the run (it resumes rather than starting over).
    again = write_graph_for(tmp_path / "again", inputs)
    assert again["fingerprint"] == paper["fingerprint"]
    rerun = run_training(root, "toy", inputs, config, again)
    assert rerun.manifest["run_id"] == run_ids["paper"] and rerun.resumed_from_epoch == 1
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
    assert run.manifest["best_val_score"] > 0
    with pytest.raises(GraphMismatch, match=r"negative_iou \(0.65\) must not exceed"):
        run_training(
            root, "toy", inputs, TrainConfig(task="phrase_region", negative_iou=0.65), paper
        )
