"""Training assets with ``distributed.nproc_per_node: 2``: torchrun launched through Dagster
Pipes on this CPU (gloo), against one process on the same global batches; a killed rank, a
rank that raises, and resuming after a failure."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from ops.storage.sql import run_query
from ops.training.settings import train_config_for
from tests.pipeline_helpers import FEATURE_ASSETS, TINY_TRAINING, materialize

# Dropout off, so one process and two draw the same network; a few steps per epoch.
EQUIVALENT = {**TINY_TRAINING, "dropout": 0.0, "max_train_steps_per_epoch": 3, "epochs": 2}
TWO_PROCESSES = {"distributed": {"nproc_per_node": 2}}
UPSTREAM = {
    "image_sentence": ("image_features", "text_features"),
    "phrase_region": ("region_features", "region_proposals", "phrase_features"),
}


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory):
    """Feature files and the neighborhood graph of the small synthetic dataset, materialized
    once: ``(data root, instance, upstream outputs by asset)``."""
    root = tmp_path_factory.mktemp("torchrun") / "data"
    with dg.instance_for_test() as instance:
        result = materialize([*FEATURE_ASSETS, "neighborhood_graph"], root, instance=instance)
        read = {name for names in UPSTREAM.values() for name in names} | {"neighborhood_graph"}
        outputs = {name: result.output_for_node(name) for name in read}
        yield root, instance, outputs


def _train(features, asset: str, settings: dict, raise_on_error: bool = True):
    root, instance, _ = features
    return materialize([asset], root, {asset: settings}, instance, raise_on_error=raise_on_error)


def _single_process(features, task: str, network: str, settings: dict, tmp_path: Path):
    """The same run in this process, recorded under another data root (with the dataset's
    tables, which the phrase task reads from its root)."""
    from ops.training.run import run_training

    root, _, outputs = features
    shutil.copytree(root / "tables", tmp_path / "tables")
    inputs = {name: outputs[name].path for name in UPSTREAM[task]}
    config = train_config_for(settings, task, network, "cpu")
    assert config.distributed.world_size == 1
    return run_training(tmp_path, "synthetic", inputs, config, outputs["neighborhood_graph"])


def _epoch_losses(root: Path, run_id: str) -> list[float]:
    frame = run_query(
        root, f"SELECT loss FROM epoch_metrics WHERE run_id = '{run_id}' ORDER BY epoch"
    )
    return [float(loss) for loss in frame["loss"]]


@pytest.mark.parametrize(
    ("task", "network"), [("image_sentence", "embedding"), ("phrase_region", "similarity")]
)
def test_two_processes_train_like_one(features, task, network, tmp_path, one_thread) -> None:
    root = features[0]
    asset = f"{task}_{network}_net"
    result = _train(features, asset, EQUIVALENT | TWO_PROCESSES)
    manifest = result.output_for_node(asset)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["world_size"].value == 2
    assert manifest.world_size == 2

    runs = run_query(
        root, f"SELECT world_size, status FROM training_runs WHERE run_id = '{manifest.run_id}'"
    )
    assert runs.to_dict("records") == [{"world_size": 2, "status": "finished"}]
    single = _single_process(features, task, network, EQUIVALENT, tmp_path)
    # Where the ranks run does not change what is trained: the same run id.
    assert single.manifest.run_id == manifest.run_id
    assert single.world_size == 1
    distributed = _epoch_losses(root, manifest.run_id)
    alone = _epoch_losses(tmp_path, single.manifest.run_id)
    assert len(distributed) == len(alone) == 2
    assert distributed == pytest.approx(alone, rel=1e-5)


KILL_RANK_ONE = """
import glob, os, signal, threading, time

def _kill_after_first_checkpoint(pattern):
    # Other runs' checkpoints may match already: wait for this run's first.
    before = set(glob.glob(pattern))
    while not set(glob.glob(pattern)) - before:
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get("RANK") == "1" and os.environ.get("KILL_RANK_ONE_AFTER"):
    threading.Thread(
        target=_kill_after_first_checkpoint,
        args=(os.environ["KILL_RANK_ONE_AFTER"],),
        daemon=True,
    ).start()
"""


def test_a_killed_rank_fails_the_step_and_the_next_run_resumes(
    features, tmp_path, monkeypatch
) -> None:
    root = features[0]
    asset = "image_sentence_embedding_net"
    # Other settings than the equivalence test's, so this is a run of its own.
    settings = {**TINY_TRAINING, "epochs": 6, "max_train_steps_per_epoch": 2, "seed": 7}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(KILL_RANK_ONE))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("KILL_RANK_ONE_AFTER", str(root / "checkpoints" / "*" / "last.pt"))

    failed = _train(features, asset, settings | TWO_PROCESSES, raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "distributed training of image_sentence-embedding-synthetic-" in message
    assert "killed by a signal" in message
    runs = run_query(root, "SELECT run_id, status, world_size FROM training_runs")
    (killed,) = runs[runs["status"] == "failed"].to_dict("records")
    assert killed["world_size"] == 2

    monkeypatch.delenv("KILL_RANK_ONE_AFTER")
    resumed = _train(features, asset, settings | TWO_PROCESSES)
    manifest = resumed.output_for_node(asset)
    assert manifest.run_id == killed["run_id"]
    (event,) = resumed.get_asset_materialization_events()
    resumed_from = event.materialization.metadata["resumed_from_epoch"].value
    assert 1 <= resumed_from < 6
    assert event.materialization.metadata["epochs_run"].value == 6
    assert len(_epoch_losses(root, manifest.run_id)) == 6
    status = run_query(
        root, f"SELECT status FROM training_runs WHERE run_id = '{killed['run_id']}'"
    )
    assert list(status["status"]) == ["finished"]


def test_a_rank_that_raises_fails_the_step_with_its_traceback(features) -> None:
    settings = {
        **TINY_TRAINING,
        "epochs": 1,
        "distributed": {"nproc_per_node": 2, "backend": "nccl"},
    }
    result = _train(features, "image_sentence_similarity_net", settings, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    # No NCCL on a CPU machine: each rank's process group refuses it.
    assert "rank 0:" in message and "rank 1:" in message
    assert "nccl" in message.lower() or "gpu" in message.lower()
    errors = [
        record.user_message
        for record in features[1].all_logs(result.run_id)
        if record.level >= 40 and "Traceback" in record.user_message
    ]
    assert errors
    assert any("init_process_group" in text for text in errors)
