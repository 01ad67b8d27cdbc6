"""The training loop for both tasks and both networks: resumable, CPU or CUDA, one process or
many under ``torchrun``.

Per epoch: the sampler (seeded by (seed, epoch)) draws the global batches; each step embeds
this rank's shard, gathers, computes the loss of the global batch, and takes an Adam step;
then the learning rate decays, the validation split is scored, and ``last.pt`` (every epoch)
and ``best.pt`` (when the validation score improves) are written atomically by rank 0.

A run whose ``last.pt`` exists resumes after that epoch with model, optimizer, scheduler,
counters, history and every random generator restored, so on CPU an interrupted run ends
bit-identical to an uninterrupted one. A ``last.pt`` written with a different config (other
than ``epochs``, ``early_stopping_patience`` or ``device``) or different data shapes is an
error rather than a silent fresh start: the directory belongs to another run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.losses import embedding_loss, logistic_loss, region_phrase_embedding_loss
from models.samplers import NeighborhoodSampler, PairSampler, TripletSampler
from ops.device import autocast_context
from ops.training import distributed as dist_utils
from ops.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    build_model,
    capture_rng_state,
    config_of,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from ops.training.config import RESUMABLE_CHANGES, TrainConfig
from ops.training.data import (
    DeviceFeatures,
    ImageSentenceData,
    PhraseBatchSampler,
    PhraseRegionData,
    SplitData,
    data_signature,
    sample_phrase_pairs,
    task_of,
)
from ops.training.validate import validate

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
ProgressCallback = Callable[[int, int, int], None]


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
    model_state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready."""
        return {
            "config": self.config.model_dump(mode="json"),
            "best_epoch": self.best_epoch,
            "best_val_score": self.best_val_score,
            "best_val_metrics": self.best_val_metrics,
            "epochs": [record.to_dict() for record in self.epochs],
            "last_checkpoint": str(self.last_checkpoint),
            "best_checkpoint": str(self.best_checkpoint),
            "device": self.device,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
        }


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass(frozen=True)
class StepBatch:
    """Rows of one global batch. ``image_rows`` index the image-side features (images or
    regions), ``text_rows`` the text side; ``paired`` rows are aligned (similarity network).
    """

    image_rows: np.ndarray
    text_rows: np.ndarray
    paired: bool
    text_image: np.ndarray | None = None
    text_neighbors: np.ndarray | None = None
    labels: np.ndarray | None = None
    positive: np.ndarray | None = None
    negative: np.ndarray | None = None


class BatchPlan:
    """The global batches of an epoch for the configured task and network."""

    def __init__(self, config: TrainConfig, data: SplitData) -> None:
        self.config = config
        self.epoch = 0
        seed = config.seed
        if isinstance(data, ImageSentenceData):
            if config.network == "similarity":
                self.sampler: Any = PairSampler(
                    data.caption_image,
                    config.similarity_batch,
                    config.negatives_per_positive,
                    seed,
                    negative_side=config.negative_side,
                )
            elif config.sampler == "neighborhood":
                self.sampler = NeighborhoodSampler(
                    data.caption_image,
                    config.batch_images,
                    config.sentences_per_image,
                    seed,
                    extra_neighbors=_knn_neighborhoods(config, data),
                )
            else:
                self.sampler = TripletSampler(data.caption_image, config.batch_images, seed)
        else:
            if not data.positive_phrase.size:
                raise ValueError(
                    "the phrase training data has no positive (phrase, region) pair: the "
                    "neighborhood graph's phrase_region edges give them"
                )
            self.sampler = PhraseBatchSampler(
                data,
                config.phrases_per_batch,
                config.negative_iou,
                config.cross_image_negatives,
                seed,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        steps = len(self.sampler)
        cap = self.config.max_train_steps_per_epoch
        return steps if cap is None else min(steps, cap)

    def __iter__(self) -> Iterator[StepBatch]:
        config = self.config
        pair_rng = np.random.default_rng([config.seed, self.epoch, 1])
        for step, batch in enumerate(self.sampler):
            if step >= len(self):
                return
            if config.task == "image_sentence" and config.network == "embedding":
                yield StepBatch(
                    batch.image_idx,
                    batch.caption_idx,
                    False,
                    text_image=batch.caption_to_batch_image,
                    text_neighbors=batch.extra_neighbors,
                )
            elif config.task == "image_sentence":
                yield StepBatch(batch.image_idx, batch.caption_idx, True, labels=batch.labels)
            elif config.network == "embedding":
                yield StepBatch(
                    batch.region_idx,
                    batch.phrase_idx,
                    False,
                    positive=batch.positive,
                    negative=batch.negative,
                )
            else:
                regions, phrases, labels = sample_phrase_pairs(
                    batch, config.negatives_per_positive, pair_rng, config.negative_side
                )
                yield StepBatch(regions, phrases, True, labels=labels)


def _knn_neighborhoods(
    config: TrainConfig, data: ImageSentenceData
) -> tuple[np.ndarray, np.ndarray] | None:
    if not config.knn_sentence_neighbors:
        return None
    if not data.has_knn:
        raise ValueError(
            "knn_sentence_neighbors needs the graph's kNN sentence edges: materialize "
            "neighborhood_graph with knn_k > 0"
        )
    return data.knn_start, data.knn_rows


def _check_batch_rows(batch: StepBatch) -> bool:
    # BatchNorm in training mode needs at least two rows per branch.
    return batch.image_rows.size >= 2 and batch.text_rows.size >= 2


# ---------------------------------------------------------------------------------------------
# One step


def _has_repeated_items(batch: StepBatch) -> bool:
    # Unique embedding needs two or more items per branch (BatchNorm in training mode).
    images, texts = np.unique(batch.image_rows), np.unique(batch.text_rows)
    return (
        images.size >= 2
        and texts.size >= 2
        and (images.size < batch.image_rows.size or texts.size < batch.text_rows.size)
    )


def _similarity_loss_on_unique_items(
    model: nn.Module,
    features: DeviceFeatures,
    batch: StepBatch,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logistic loss with every image (region) and sentence (phrase) of the batch embedded
    once, however many pairs it is in.

    Ranks split the batch's items, embed their share and gather everyone's embeddings (so
    normalization sees each item once, as one process would); then each rank scores its
    share of the pairs and the logits are gathered for the loss.
    """
    unique_images, image_of_pair = np.unique(batch.image_rows, return_inverse=True)
    unique_texts, text_of_pair = np.unique(batch.text_rows, return_inverse=True)
    bounds = {
        "image": dist_utils.shard_bounds(unique_images.size, context.world_size),
        "text": dist_utils.shard_bounds(unique_texts.size, context.world_size),
        "pair": dist_utils.shard_bounds(batch.image_rows.size, context.world_size),
    }
    image_lo, image_hi = bounds["image"][context.rank]
    text_lo, text_hi = bounds["text"][context.rank]
    pair_lo, pair_hi = bounds["pair"][context.rank]

    def combine(embeddings: torch.Tensor, side: str) -> torch.Tensor:
        return dist_utils.gather_rows(embeddings, bounds[side])

    image_rows = torch.from_numpy(unique_images[image_lo:image_hi]).to(device)
    text_rows = torch.from_numpy(unique_texts[text_lo:text_hi]).to(device)
    with autocast_context(device, config.amp):
        output = model(
            features.image_features[image_rows],
            features.text_features[text_rows],
            image_index=torch.from_numpy(image_of_pair[pair_lo:pair_hi]).to(device),
            text_index=torch.from_numpy(text_of_pair[pair_lo:pair_hi]).to(device),
            combine=combine,
        )
    logits = dist_utils.gather_rows(output.float(), bounds["pair"])
    assert batch.labels is not None
    loss = logistic_loss(logits, torch.from_numpy(batch.labels).to(device))
    return loss, {"logistic": loss}


def _loss(
    model: nn.Module,
    features: DeviceFeatures,
    batch: StepBatch,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if config.network == "similarity" and _has_repeated_items(batch):
        return _similarity_loss_on_unique_items(model, features, batch, config, context, device)
    image_bounds = dist_utils.shard_bounds(batch.image_rows.size, context.world_size)
    text_bounds = dist_utils.shard_bounds(batch.text_rows.size, context.world_size)
    image_lo, image_hi = image_bounds[context.rank]
    text_lo, text_hi = text_bounds[context.rank]
    image_rows = torch.from_numpy(batch.image_rows[image_lo:image_hi]).to(device)
    text_rows = torch.from_numpy(batch.text_rows[text_lo:text_hi]).to(device)
    with autocast_context(device, config.amp):
        output = model(features.image_features[image_rows], features.text_features[text_rows])

    if config.network == "similarity":
        logits = dist_utils.gather_rows(output.float(), image_bounds)
        assert batch.labels is not None
        loss = logistic_loss(logits, torch.from_numpy(batch.labels).to(device))
        return loss, {"logistic": loss}

    image_emb = dist_utils.gather_rows(output[0].float(), image_bounds)
    text_emb = dist_utils.gather_rows(output[1].float(), text_bounds)
    if config.task == "image_sentence":
        assert batch.text_image is not None
        text_image = torch.from_numpy(batch.text_image).to(device)
        extra = None
        if batch.text_neighbors is not None:
            extra = torch.from_numpy(batch.text_neighbors).to(device)
        return embedding_loss(
            image_emb, text_emb, text_image, config.loss_config(), extra_neighbors=extra
        )
    assert batch.positive is not None and batch.negative is not None
    return region_phrase_embedding_loss(
        image_emb,
        text_emb,
        torch.from_numpy(batch.positive).to(device),
        torch.from_numpy(batch.negative).to(device),
        config.loss_config(),
    )


# ---------------------------------------------------------------------------------------------
# Training


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


@dataclass
class _RunState:
    start_epoch: int = 1
    best_val_score: float | None = None
    best_epoch: int | None = None
    best_val_metrics: dict[str, float] = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from_epoch: int | None = None


def _check_split(config: TrainConfig, data: SplitData, name: str) -> None:
    if task_of(data) != config.task:
        raise ValueError(
            f"{name} split is {task_of(data)} data but the config's task is {config.task}"
        )


def _seed_per_rank(seed: int, epoch: int, rank: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def _resume(
    path: Path,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dims: dict[str, int],
    signature: dict[str, int],
    context: dist_utils.DistContext,
) -> _RunState:
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
    else:
        _seed_per_rank(config.seed, int(payload["epoch"]) + 1, context.rank)
    history = [EpochRecord.from_dict(record) for record in payload["history"]]
    best_epoch = payload["best_epoch"]
    best_metrics = next((r.val_metrics for r in history if r.epoch == best_epoch), {})
    return _RunState(
        start_epoch=int(payload["epoch"]) + 1,
        best_val_score=payload["best_val_score"],
        best_epoch=best_epoch,
        best_val_metrics=dict(best_metrics),
        epochs_without_improvement=int(payload["epochs_without_improvement"]),
        history=history,
        resumed_from_epoch=int(payload["epoch"]),
    )


def _patience_spent(config: TrainConfig, state: _RunState) -> bool:
    patience = config.early_stopping_patience
    return patience is not None and state.epochs_without_improvement >= patience


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
        _seed_per_rank(config.seed, 0, context.rank)
    optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gamma = config.lr_decay if config.apply_lr_decay else 1.0
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

    state = _RunState()
    if last_path.exists():
        state = _resume(last_path, config, core, optimizer, scheduler, dims, signature, context)

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
            if _patience_spent(config, state):
                break
            record = _run_epoch(
                epoch, model, core, optimizer, scheduler, plan, train_features, config,
                context, device, progress, val_data, val_features, state,
            )  # fmt: skip
            state.history.append(record)
            if context.is_main:
                payload = _payload(
                    config, core, optimizer, scheduler, epoch, state, dims, signature,
                    context,
                )  # fmt: skip
                if record.improved:
                    save_checkpoint(best_path, payload)
                save_checkpoint(last_path, payload)
                if on_epoch is not None:
                    on_epoch(record)
            else:
                _payload_rng(context)  # every rank takes part in gathering RNG states
            dist_utils.barrier(context)

    return _result(config, state, last_path, best_path, device, dims)


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
    state: _RunState,
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
        if not _check_batch_rows(batch):
            continue
        loss, terms = _loss(model, features, batch, config, context, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def _payload_rng(context: dist_utils.DistContext) -> dict[str, Any]:
    return {
        "world_size": context.world_size,
        "ranks": dist_utils.gather_objects(capture_rng_state(), context),
    }


def _payload(
    config: TrainConfig,
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    state: _RunState,
    dims: dict[str, int],
    signature: dict[str, int],
    context: dist_utils.DistContext,
) -> dict[str, Any]:
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
        "stopped_early": _patience_spent(config, state) and epoch < config.epochs,
        "history": [record.to_dict() for record in state.history],
        "rng": _payload_rng(context),
    }


def _result(
    config: TrainConfig,
    state: _RunState,
    last_path: Path,
    best_path: Path,
    device: torch.device,
    dims: dict[str, int],
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
        stopped_early=_patience_spent(config, state) and last_epoch < config.epochs,
        resumed_from_epoch=state.resumed_from_epoch,
        image_dim=dims["image_dim"],
        text_dim=dims["text_dim"],
        model_state=model_state,
    )


__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "BatchPlan",
    "EpochRecord",
    "ImageSentenceData",
    "PhraseRegionData",
    "StepBatch",
    "TrainResult",
    "train",
]
