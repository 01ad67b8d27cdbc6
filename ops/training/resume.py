"""Resumption: the state a run carries from epoch to epoch, the checkpoint payload it is
saved as after every epoch, and a run restored from its ``last.pt``.

A resumed run restores model, optimizer, scheduler, counters, history and every random
generator, so on CPU an interrupted run ends bit-identical to an uninterrupted one. A
``last.pt`` written with a different config (other than its ``RESUMABLE_CHANGES``, which the
run id leaves out too) or different data shapes is an error rather than a silent fresh start:
the directory belongs to another run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ops.training import distributed as dist_utils
from ops.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    capture_rng_state,
    config_of,
    load_checkpoint,
    restore_rng_state,
)
from ops.training.config import RESUMABLE_CHANGES, TrainConfig


@dataclass
class EpochRecord:
    """One finished epoch. ``epoch`` counts from 1; ``lr`` is the rate used during it."""

    epoch: int
    loss: float
    loss_terms: dict[str, float]
    val_score: float | None
    val_metrics: dict[str, float]
    lr: float
    seconds: float
    steps: int
    improved: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochRecord:
        return cls(**values)


@dataclass
class RunState:
    """Counters and history that carry from epoch to epoch and through ``last.pt``."""

    start_epoch: int = 1
    best_val_score: float | None = None
    best_epoch: int | None = None
    best_val_metrics: dict[str, float] = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from_epoch: int | None = None


def patience_spent(config: TrainConfig, state: RunState) -> bool:
    """Whether early stopping ends the run before another epoch."""
    patience = config.early_stopping_patience
    return patience is not None and state.epochs_without_improvement >= patience


def seed_per_rank(seed: int, epoch: int, rank: int) -> None:
    """Seed torch's global generator for ``rank`` from (seed, epoch, rank)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def resume_run(
    path: Path,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dims: dict[str, int],
    signature: dict[str, int],
    context: dist_utils.DistContext,
) -> RunState:
    """Load ``path`` into model, optimizer and scheduler, restore the random generators and
    return the run's state; a checkpoint of another run is a :class:`CheckpointError`."""
    payload = load_checkpoint(path)
    stored = config_of(payload, path)
    differences = {
        key: value
        for key, value in stored.differences(config).items()
        if key not in RESUMABLE_CHANGES
    }
    if differences:
        detail = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in sorted(differences.items()))
        raise CheckpointError(
            f"{path}: written by a run with a different config ({detail}); resume with the "
            "same config or use an empty checkpoint directory"
        )
    if payload["model_dims"] != dims or payload.get("data_signature") != signature:
        raise CheckpointError(
            f"{path}: written for other data (dims {payload['model_dims']}, sizes "
            f"{payload.get('data_signature')}; now {dims}, {signature})"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    if int(rng["world_size"]) == context.world_size:
        restore_rng_state(rng["ranks"][context.rank])
    else:  # another world size: the saved per-rank states do not map onto these ranks
        seed_per_rank(config.seed, int(payload["epoch"]) + 1, context.rank)
    history = [EpochRecord.from_dict(record) for record in payload["history"]]
    best_epoch = payload["best_epoch"]
    best_metrics = next((r.val_metrics for r in history if r.epoch == best_epoch), {})
    return RunState(
        start_epoch=int(payload["epoch"]) + 1,
        best_val_score=payload["best_val_score"],
        best_epoch=best_epoch,
        best_val_metrics=dict(best_metrics),
        epochs_without_improvement=int(payload["epochs_without_improvement"]),
        history=history,
        resumed_from_epoch=int(payload["epoch"]),
    )


def rng_payload(context: dist_utils.DistContext) -> dict[str, Any]:
    """Every rank's random generator states, in rank order; a collective: every rank calls it."""
    return {
        "world_size": context.world_size,
        "ranks": dist_utils.gather_objects(capture_rng_state(), context),
    }


def checkpoint_payload(
    config: TrainConfig,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    state: RunState,
    dims: dict[str, int],
    signature: dict[str, int],
    context: dist_utils.DistContext,
) -> dict[str, Any]:
    """What ``last.pt`` and ``best.pt`` hold after ``epoch``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config.to_json(),
        "model_dims": dict(dims),
        "data_signature": dict(signature),
        "epoch": epoch,
        "model": {name: value.detach().cpu() for name, value in core.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_val_score": state.best_val_score,
        "best_epoch": state.best_epoch,
        "epochs_without_improvement": state.epochs_without_improvement,
        "stopped_early": patience_spent(config, state) and epoch < config.epochs,
        "history": [record.to_dict() for record in state.history],
        "rng": rng_payload(context),
    }
