"""Resumption: a run killed mid-training ends exactly like an uninterrupted one; foreign or
mismatched checkpoints are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ops.training.checkpoint import CheckpointError, load_checkpoint
from ops.training.config import TrainConfig
from ops.training.trained_model import load_two_branch
from ops.training.trainer import train as run_training
from tests.training_problems import SMALL, make_image_sentence, make_phrase_region

pytestmark = pytest.mark.usefixtures("one_thread")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _launch(tmp_path: Path, run: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [
        sys.executable, "-m", "tests.training_process",
        "--config", str(tmp_path / "config.json"),
        "--checkpoint-dir", str(tmp_path / run),
        "--result", str(tmp_path / f"{run}.json"),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


def _without_timing(result: dict) -> dict:
    for record in result["epochs"]:
        record.pop("seconds")
    result.pop("resumed_from_epoch")
    return result


def _assert_same_tensors(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    # Dropout on, so the restored torch generator matters; patience state is restored too.
    config = TrainConfig(epochs=10, early_stopping_patience=4, seed=3, **{**SMALL, "dropout": 0.5})
    (tmp_path / "config.json").write_text(config.to_json())

    reference = _launch(tmp_path, "reference")
    victim = _launch(tmp_path, "interrupted")
    last = tmp_path / "interrupted" / "last.pt"
    deadline = time.monotonic() + 90
    while not last.exists():
        assert victim.poll() is None, victim.communicate()[1].decode()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.002)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)  # reaps it and closes its pipes
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)["epoch"]
    assert not (tmp_path / "interrupted.json").exists()

    resumed = _launch(tmp_path, "interrupted")
    _finish(resumed)
    _finish(reference)

    expected = json.loads((tmp_path / "reference.json").read_text())
    actual = json.loads((tmp_path / "interrupted.json").read_text())
    assert expected["resumed_from_epoch"] is None
    assert actual["resumed_from_epoch"] == killed_at
    assert 1 <= killed_at < len(expected["epochs"])
    assert _without_timing(actual) == _without_timing(expected)
    for name in ("last.pt", "best.pt"):
        want = load_checkpoint(tmp_path / "reference" / name)
        got = load_checkpoint(tmp_path / "interrupted" / name)
        _assert_same_tensors(got["model"], want["model"])
        for group, state in want["optimizer"]["state"].items():
            _assert_same_tensors(got["optimizer"]["state"][group], state)
        assert got["rng"]["ranks"][0]["torch"].equal(want["rng"]["ranks"][0]["torch"])


def test_resume_with_more_epochs_matches_a_longer_run(tmp_path):
    train_data, val_data = make_phrase_region(30, 0), make_phrase_region(10, 1)
    base = {**SMALL, "dropout": 0.5}
    config = TrainConfig(task="phrase_region", network="similarity", epochs=3, **base)
    straight = run_training(config, train_data, val_data, tmp_path / "straight")

    short = config.model_copy(update={"epochs": 2})
    run_training(short, train_data, val_data, tmp_path / "staged")
    resumed = run_training(config, train_data, val_data, tmp_path / "staged")

    assert resumed.resumed_from_epoch == 2 and len(resumed.epochs) == 3
    for mine, theirs in zip(resumed.epochs, straight.epochs, strict=True):
        assert (mine.loss, mine.loss_terms, mine.val_metrics, mine.lr) == (
            theirs.loss, theirs.loss_terms, theirs.val_metrics, theirs.lr
        )  # fmt: skip
    _assert_same_tensors(resumed.model_state, straight.model_state)
    _assert_same_tensors(
        load_checkpoint(tmp_path / "staged" / "last.pt")["model"],
        load_checkpoint(tmp_path / "straight" / "last.pt")["model"],
    )


def test_resume_with_a_different_config_is_an_error(tmp_path):
    train_data, val_data = make_image_sentence(60, 0), make_image_sentence(20, 1)
    config = TrainConfig(epochs=1, **SMALL)
    run_training(config, train_data, val_data, tmp_path)
    changed = config.model_copy(update={"lr": 5e-5, "epochs": 2})
    with pytest.raises(CheckpointError, match=r"different config \(lr: 0\.01 → 5e-05\)"):
        run_training(changed, train_data, val_data, tmp_path)
    with pytest.raises(CheckpointError, match="written for other data"):
        run_training(
            config.model_copy(update={"epochs": 2}), make_image_sentence(70, 0), val_data, tmp_path
        )


class Payload:
    """Stands for arbitrary code a pickled checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_foreign_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "executed"
    foreign = tmp_path / "run" / "last.pt"
    foreign.parent.mkdir()
    torch.save({"format": "twobranch-checkpoint", "version": 1, "model": Payload(marker)}, foreign)

    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_two_branch(foreign, "cpu")
    with pytest.raises(CheckpointError, match="refused to load"):
        run_training(TrainConfig(**SMALL), make_image_sentence(60, 0), None, foreign.parent)
    assert not marker.exists(), "the pickled payload must never run"

    untagged = tmp_path / "untagged.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, untagged)
    with pytest.raises(CheckpointError, match="not a twobranch checkpoint"):
        load_two_branch(untagged, "cpu")
