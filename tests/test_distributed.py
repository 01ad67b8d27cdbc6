"""Two CPU processes under gloo, set up as torchrun would, against one process on the same
global batches: same loss, same gradients, same weights (dropout off). (The training assets'
launch through torchrun and Dagster Pipes is tested in test_torchrun_training.py.)"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ops.training import distributed as dist_utils
from ops.training.batch_plans import BatchPlan
from ops.training.checkpoint import load_checkpoint
from ops.training.config import TrainConfig
from ops.training.loss_step import _loss
from ops.training.placement import DeviceFeatures
from ops.training.trained_model import build_model
from ops.training.trainer import train
from tests.training_problems import SMALL, make_image_sentence, make_phrase_region

WORLD_SIZE = 2
# Odd batch sizes, so the two shards differ in length and the gather pads.
COMMON = {**SMALL, "dropout": 0.0, "batch_images": 45, "phrases_per_batch": 25, "lr": 1e-3}
CASES = {
    "retrieval_embedding": TrainConfig(epochs=2, max_train_steps_per_epoch=3, **COMMON),
    "grounding_similarity": TrainConfig(
        task="phrase_region", network="similarity", epochs=1, max_train_steps_per_epoch=3, **COMMON
    ),
}
# A bias right before BatchNorm has a gradient that is zero up to rounding; Adam turns that
# rounding noise into steps of ±lr, so those biases (and the running means they shift) are
# compared only through the gradient check, not after optimizer steps.
PRE_NORM = ("fc1.bias", "fusion_fc.bias", "running_mean")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _problems() -> dict:
    """Per case (train, validation) data, the same in every process that builds it."""
    return {
        "retrieval_embedding": (make_image_sentence(120, 0), make_image_sentence(20, 1)),
        "grounding_similarity": (make_phrase_region(40, 0), make_phrase_region(10, 1)),
    }


def _first_step(config: TrainConfig, context: dist_utils.DistContext) -> dict:
    """Loss and gradients of the first global batch of epoch 1, from the initial weights."""
    train_data, _ = _problems()["retrieval_embedding"]
    device = torch.device("cpu")
    torch.manual_seed(config.seed)
    core = build_model(config, train_data.image_dim, train_data.text_dim)
    model: torch.nn.Module = core
    if context.is_distributed:
        core = dist_utils.convert_batch_norm(core, device)
        model = DistributedDataParallel(core)
    plan = BatchPlan(config, train_data)
    plan.set_epoch(1)
    loss, _ = _loss(model, DeviceFeatures.of(train_data, device), next(iter(plan)), config,
                    context, device)  # fmt: skip
    loss.backward()
    grads = {name: param.grad.clone() for name, param in core.named_parameters()}
    buffers = {name: value.clone() for name, value in core.named_buffers()}
    return {"loss": loss.detach(), "grads": grads, "buffers": buffers}


def _worker(rank: int, directory: str, port: int) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    root = Path(directory)
    context = dist_utils.init_distributed("cpu")
    try:
        step = _first_step(CASES["retrieval_embedding"], context)
        if context.is_main:
            torch.save(step, root / "first_step.pt")
        problems = _problems()
        for name, config in CASES.items():
            result = train(config, *problems[name], root / name)
            if context.is_main:
                payload = {
                    "epochs": [record.to_dict() for record in result.epochs],
                    "device": result.device,
                    "world_size": context.world_size,
                }
                (root / f"{name}.result.json").write_text(json.dumps(payload))
    finally:
        dist_utils.shutdown_distributed()


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    data = _problems()
    mp.spawn(_worker, args=(str(root), _free_port()), nprocs=WORLD_SIZE, join=True)
    return root, data


def test_first_step_loss_and_gradients_match_one_process(distributed_run):
    root, _ = distributed_run
    distributed = torch.load(root / "first_step.pt", weights_only=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _first_step(CASES["retrieval_embedding"], dist_utils.DistContext())
    finally:
        torch.set_num_threads(previous)
    assert float(distributed["loss"]) == pytest.approx(float(single["loss"]), abs=1e-6)
    for name, grad in single["grads"].items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(
            distributed["grads"][name], grad, atol=1e-6 + 1e-4 * scale, rtol=0
        )
    for name, value in single["buffers"].items():
        torch.testing.assert_close(distributed["buffers"][name], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_one_process(distributed_run, name, tmp_path):
    root, data = distributed_run
    result = json.loads((root / f"{name}.result.json").read_text())
    assert result["world_size"] == WORLD_SIZE and result["device"] == "cpu"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(CASES[name], *data[name], tmp_path)
    finally:
        torch.set_num_threads(previous)

    assert len(result["epochs"]) == len(single.epochs)
    for got, want in zip(result["epochs"], single.epochs, strict=True):
        assert got["steps"] == want.steps == 3
        assert got["loss"] == pytest.approx(want.loss, abs=1e-5)
        assert got["lr"] == want.lr
    weights = load_checkpoint(root / name / "last.pt")["model"]
    reference = load_checkpoint(tmp_path / "last.pt")["model"]
    compared = 0
    for key, value in reference.items():
        if value.is_floating_point() and not key.endswith(PRE_NORM):
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0, msg=key)
            compared += 1
        else:
            assert weights[key].shape == value.shape
    assert compared >= 8
    # The RNG state of every rank is kept, for an exact resume at the same world size.
    assert load_checkpoint(root / name / "last.pt")["rng"]["world_size"] == WORLD_SIZE
    assert len(load_checkpoint(root / name / "last.pt")["rng"]["ranks"]) == WORLD_SIZE
