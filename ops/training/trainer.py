"""The training loop for both tasks and both networks: resumable, CPU or CUDA, one process or
many under ``torchrun``.

Per epoch: the batch plan (seeded by (seed, epoch)) draws the global batches; each step embeds
this rank's shard, gathers, computes the loss of the global batch, and takes an Adam step;
then the learning rate decays, the validation split is scored, and ``last.pt`` (every epoch)
and ``best.pt`` (when the validation score improves) are written atomically by rank 0.

A run whose ``last.pt`` exists resumes after that epoch (:mod:`ops.training.resume`); batches
come from :mod:`ops.training.batch_plans`, steps from :mod:`ops.training.loss_step`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ops.training import distributed as dist_utils
from ops.training.batch_plans import BatchPlan
from ops.training.checkpoint import load_checkpoint, save_checkpoint
from ops.training.config import TrainConfig
from ops.training.data import SplitData, data_signature, task_of
from ops.training.loss_step import has_rows_for_batch_norm, train_step
from ops.training.placement import DeviceFeatures
from ops.training.resume import (
    EpochRecord,
    RunState,
    checkpoint_payload,
    patience_spent,
    resume_run,
    rng_payload,
    seed_per_rank,
)
from ops.training.trained_model import build_model
from ops.training.validate import validate

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
ProgressCallback = Callable[[int, int, int], None]


@dataclass
class TrainResult:
    """Outcome of :func:`train`; ``model_state`` holds the best epoch's weights (on CPU)."""

    config: TrainConfig
    best_epoch: int | None
    best_val_score: float | None
    best_val_metrics: dict[str, float]
    epochs: list[EpochRecord]
    last_checkpoint: Path
    best_checkpoint: Path
    device: str
    stopped_early: bool
    resumed_from_epoch: int | None
    image_dim: int
    text_dim: int
    # Where the training split's features were: whole on the device, or gathered per batch.
    feature_placement: str = "device"
    model_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU for the duration of a run (previous setting restored)."""
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _check_split(config: TrainConfig, data: SplitData, name: str) -> None:
    if task_of(data) != config.task:
        raise ValueError(
            f"{name} split is {task_of(data)} data but the config's task is {config.task}"
        )


def train(
    config: TrainConfig,
    train_data: SplitData,
    val_data: SplitData | None,
    checkpoint_dir: str | Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train (or resume training) the configured network; see the module docstring.

    Under an initialized process group each rank calls this with the same arguments; only
    rank 0 writes checkpoints and calls ``on_epoch``. ``progress(epoch, step, steps)`` is
    called after every step. Without ``val_data`` every epoch counts as the best so far.
    Seeds torch's global generator from ``config.seed`` (model initialization and dropout).
    """
    _check_split(config, train_data, "training")
    if val_data is not None:
        _check_split(config, val_data, "validation")
    context = dist_utils.current_context()
    device = dist_utils.device_for(config.device, context)
    checkpoint_dir = Path(checkpoint_dir)
    last_path, best_path = checkpoint_dir / LAST_CHECKPOINT, checkpoint_dir / BEST_CHECKPOINT
    dims = {"image_dim": train_data.image_dim, "text_dim": train_data.text_dim}
    signature = data_signature(train_data)

    torch.manual_seed(config.seed)
    core = build_model(config, dims["image_dim"], dims["text_dim"]).to(device)
    if context.is_distributed:
        core = dist_utils.convert_batch_norm(core, device).to(device)
        seed_per_rank(config.seed, 0, context.rank)
    optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gamma = config.lr_decay if config.apply_lr_decay else 1.0
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

    state = RunState()
    if last_path.exists():
        state = resume_run(last_path, config, core, optimizer, scheduler, dims, signature, context)

    model: nn.Module = core
    if context.is_distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(core, device_ids=device_ids)

    train_features = DeviceFeatures.of(train_data, device)
    val_features = DeviceFeatures.of(val_data, device) if val_data is not None else None
    plan = BatchPlan(config, train_data)
    if len(plan) == 0:
        raise ValueError(
            "the training split yields no batch: it has fewer items than one batch "
            f"(batch_images={config.batch_images}, similarity_batch={config.similarity_batch})"
        )

    with _deterministic(device):
        for epoch in range(state.start_epoch, config.epochs + 1):
            if patience_spent(config, state):
                break
            record = _run_epoch(
                epoch, model, core, optimizer, scheduler, plan, train_features, config,
                context, device, progress, val_data, val_features, state,
            )  # fmt: skip
            state.history.append(record)
            if context.is_main:
                payload = checkpoint_payload(
                    config, core, optimizer, scheduler, epoch, state, dims, signature,
                    context,
                )  # fmt: skip
                if record.improved:
                    save_checkpoint(best_path, payload)
                save_checkpoint(last_path, payload)
                if on_epoch is not None:
                    on_epoch(record)
            else:
                rng_payload(context)  # every rank takes part in gathering RNG states
            dist_utils.barrier(context)

    return _result(config, state, last_path, best_path, device, dims, train_features.placement)


def _run_epoch(
    epoch: int,
    model: nn.Module,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    plan: BatchPlan,
    features: DeviceFeatures,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
    progress: ProgressCallback | None,
    val_data: SplitData | None,
    val_features: DeviceFeatures | None,
    state: RunState,
) -> EpochRecord:
    started = time.perf_counter()
    lr = float(optimizer.param_groups[0]["lr"])
    model.train()
    plan.set_epoch(epoch)
    total_steps = len(plan)
    loss_sum = torch.zeros((), device=device)
    term_sums: dict[str, torch.Tensor] = {}
    steps = 0
    for step, batch in enumerate(plan, start=1):
        if not has_rows_for_batch_norm(batch):
            continue
        loss, terms = train_step(model, optimizer, features, batch, config, context, device)
        loss_sum += loss.detach()
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, torch.zeros((), device=device)) + value.detach()
        steps += 1
        if progress is not None:
            progress(epoch, step, total_steps)
    scheduler.step()

    val_score: float | None = None
    val_metrics: dict[str, float] = {}
    if val_data is not None and val_features is not None:
        if context.is_main:
            val_score, val_metrics = validate(
                core, val_data, val_features, config.network, config.eval_chunk, config.amp,
                config.localization_iou,
            )  # fmt: skip
        val_score, val_metrics = dist_utils.broadcast_object((val_score, val_metrics), context)

    improved = val_score is None or state.best_val_score is None or val_score > state.best_val_score
    if val_score is not None and not np.isfinite(val_score):
        improved = False
    if improved:
        state.best_val_score, state.best_epoch = val_score, epoch
        state.best_val_metrics = dict(val_metrics)
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
    divisor = max(steps, 1)
    return EpochRecord(
        epoch=epoch,
        loss=float(loss_sum) / divisor,
        loss_terms={name: float(value) / divisor for name, value in term_sums.items()},
        val_score=val_score,
        val_metrics=val_metrics,
        lr=lr,
        seconds=time.perf_counter() - started,
        steps=steps,
        improved=improved,
    )


def _result(
    config: TrainConfig,
    state: RunState,
    last_path: Path,
    best_path: Path,
    device: torch.device,
    dims: dict[str, int],
    feature_placement: str,
) -> TrainResult:
    model_state: dict[str, torch.Tensor] = {}
    if best_path.exists():
        model_state = load_checkpoint(best_path)["model"]
    last_epoch = state.history[-1].epoch if state.history else 0
    return TrainResult(
        config=config,
        best_epoch=state.best_epoch,
        best_val_score=state.best_val_score,
        best_val_metrics=dict(state.best_val_metrics),
        epochs=list(state.history),
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        device=str(device),
        stopped_early=patience_spent(config, state) and last_epoch < config.epochs,
        resumed_from_epoch=state.resumed_from_epoch,
        image_dim=dims["image_dim"],
        text_dim=dims["text_dim"],
        feature_placement=feature_placement,
        model_state=model_state,
    )


__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "EpochRecord",
    "TrainResult",
    "train",
]
