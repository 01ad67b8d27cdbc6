"""One recorded training run: feature files in, a checkpoint, a ``training_runs`` row (status
running → finished or failed), ``epoch_metrics`` rows and a champion decision out."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ops.data.dataset_store import load_dataset_table
from ops.graph.store import graph_identity
from ops.handoffs import NeighborhoodGraphFile, TrainedModel
from ops.storage.input_fingerprints import input_fingerprints, run_input_paths
from ops.storage.paths import checkpoint_dir
from ops.storage.results_store import publish_catalogue, utc_now
from ops.storage.run_records import (
    file_identity,
    make_run_id,
    promote_if_better,
    write_epochs,
    write_run,
)
from ops.storage.validation_scope import ValidationScope
from ops.training.config import RESUMABLE_CHANGES, TrainConfig
from ops.training.curves import curves_png
from ops.training.data import ImageSentenceData, PhraseRegionData
from ops.training.distributed import current_context
from ops.training.graph_inputs import image_sentence_from_graph, phrase_region_from_graph
from ops.training.inputs import (
    ImageSentenceSplit,
    PhraseRegionSplit,
    first_images,
    image_sentence_splits,
    phrase_region_splits,
)
from ops.training.trainer import EpochRecord, train

Log = Callable[[str], None]


class EmptyTrainingSplit(ValueError):
    """The feature files hold no training rows for the task."""


class GraphMismatch(ValueError):
    """The training settings contradict the neighborhood graph's."""


@dataclass(frozen=True)
class TrainingRun:
    """What a finished run hands on: ``manifest`` is what downstream steps read (checkpoint,
    features, scores, champion); the rest describes the run for people."""

    manifest: TrainedModel
    score_name: str  # "R-sum" (retrieval) or "accuracy" (localization)
    rows: int  # training sentences or phrases, each seen once per epoch
    seconds: float
    epochs_run: int
    resumed_from_epoch: int | None
    stopped_early: bool
    config: dict[str, Any]
    curves_png: bytes = field(repr=False)
    world_size: int = 1

    def to_payload(self) -> dict[str, Any]:
        """JSON-ready form, for a run trained in another process (``from_payload`` reads it)."""
        return asdict(self) | {
            "manifest": self.manifest.model_dump(mode="json"),
            "curves_png": base64.b64encode(self.curves_png).decode(),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TrainingRun:
        return cls(
            **{
                **payload,
                "manifest": TrainedModel.model_validate(payload["manifest"]),
                "curves_png": base64.b64decode(payload["curves_png"]),
            }
        )


def load_training_splits(
    config: TrainConfig,
    inputs: Mapping[str, str],
    graph: NeighborhoodGraphFile,
    root: Path,
    dataset: str,
) -> dict:
    """Per split the training arrays; the train split's positives and neighborhoods are the
    graph's."""
    if config.task == "image_sentence":
        splits = image_sentence_splits(inputs["image_features"], inputs["text_features"])
        if "train" in splits:
            splits["train"] = image_sentence_from_graph(
                splits["train"], graph.path, with_knn=config.knn_sentence_neighbors
            )
        return splits
    splits = phrase_region_splits(
        inputs["region_features"],
        inputs["region_proposals"],
        inputs["phrase_features"],
        load_dataset_table(root, dataset, "phrases"),
    )
    if "train" in splits:
        splits["train"] = phrase_region_from_graph(splits["train"], graph.path)
    return splits


def _check_against_graph(config: TrainConfig, graph: NeighborhoodGraphFile) -> None:
    positive_iou = float(graph.settings["positive_iou"])
    if config.task == "phrase_region" and config.negative_iou > positive_iou:
        raise GraphMismatch(
            f"negative_iou ({config.negative_iou}) must not exceed the neighborhood graph's "
            f"positive_iou ({positive_iou})"
        )
    wants_knn = config.task == "image_sentence" and config.knn_sentence_neighbors
    if wants_knn and not int(graph.settings["knn_k"]):
        raise GraphMismatch(
            "knn_sentence_neighbors needs the graph's kNN sentence edges: materialize "
            "neighborhood_graph with knn_k > 0"
        )


def _training_rows(data: ImageSentenceData | PhraseRegionData) -> int:
    texts = data.text_features if isinstance(data, ImageSentenceData) else data.phrase_features
    return int(texts.shape[0])


def _step_logger(log: Log, every_s: float) -> Callable[[int, int, int], None]:
    last_logged = [time.monotonic()]

    def progress(epoch: int, step: int, steps: int) -> None:
        if time.monotonic() - last_logged[0] > every_s:
            last_logged[0] = time.monotonic()
            log(f"epoch {epoch}: step {step}/{steps}")

    return progress


def training_run_id(
    dataset: str,
    inputs: Mapping[str, str],
    config: TrainConfig,
    graph: NeighborhoodGraphFile,
    val_max_images: int,
) -> str:
    """The run's id: what decides the model it trains — its config less the settings a run may
    change and still resume (``RESUMABLE_CHANGES``: how long and where it trains), the
    validation images that pick its best epoch, its input files and the graph it learns from.
    A run asked for more epochs therefore continues the shorter run's checkpoints."""
    return make_run_id(
        config.task,
        config.network,
        dataset,
        config.model_dump(mode="json", exclude=set(RESUMABLE_CHANGES))
        | {"val_max_images": val_max_images},
        {name: file_identity(path) for name, path in inputs.items()}
        | {"neighborhood_graph": graph_identity(graph)},
    )


def validation_scope(
    config: TrainConfig,
    full: ImageSentenceSplit | PhraseRegionSplit,
    scored: ImageSentenceSplit | PhraseRegionSplit,
    max_images: int,
) -> ValidationScope:
    """What the run's validation scores are measured on: ``scored``, the part of the
    validation split ``full`` that is validated."""
    protocol = (
        "R-sum"
        if config.task == "image_sentence"
        else f"accuracy at IoU ≥ {config.localization_iou:g}"
    )
    return ValidationScope(
        images=len(scored.image_ids),
        split_images=len(full.image_ids),
        max_images=max_images,
        protocol=protocol,
    )


def run_training(
    root: Path,
    dataset: str,
    inputs: Mapping[str, str],
    config: TrainConfig,
    graph: NeighborhoodGraphFile,
    *,
    val_max_images: int = 0,
    log: Log = lambda message: None,
    progress_every_s: float = 15.0,
) -> TrainingRun:
    """Train ``config.task`` / ``config.network`` on the feature files ``inputs`` (name → path)
    with the positives and neighborhoods of ``graph`` (the ``neighborhood_graph`` hand-off:
    path, fingerprint, settings), and record the run under ``root``.

    The run id (:func:`training_run_id`) hashes the config (less its resumable settings),
    ``val_max_images``, the input files and the graph's settings and content, so re-running
    after a crash, or with more epochs, resumes from the run's last checkpoint and a changed
    graph is a new run. The run becomes the champion of (task, network, dataset) only if its
    validation score beats the current champion's, measured in a like validation scope.

    Under torchrun every rank calls this with the same arguments; rank 0 alone records the
    run, and only its returned run is complete (the others' carry no champion decision).
    """
    task, network = config.task, config.network
    _check_against_graph(config, graph)
    run_id = training_run_id(dataset, inputs, config, graph, val_max_images)
    splits = load_training_splits(config, inputs, graph, root, dataset)
    if "train" not in splits:
        raise EmptyTrainingSplit(f"no training data for {task}: the train split is empty")
    val, scope = splits.get("val"), None
    if val is not None:
        scored = first_images(val, val_max_images)
        val, scope = scored, validation_scope(config, val, scored, val_max_images)
    context = current_context()
    recording = context.is_main
    started_at = utc_now()
    graph_record = graph_identity(graph) | {"path": graph.path}
    # What the model may be applied to: the content of these files, not their paths.
    fingerprints = input_fingerprints(run_input_paths(inputs, graph_record)) if recording else {}
    record = {
        "task": task,
        "network": network,
        "dataset": dataset,
        "config": config.model_dump(mode="json"),
        # The inputs, the graph the run learned from (queryable: features->'graph') and the
        # fingerprints of both.
        "features": dict(inputs) | {"graph": graph_record, "fingerprints": fingerprints},
        "world_size": context.world_size,
        "validation_scope": scope,
    }

    def record_run(**fields: Any) -> None:
        if recording:
            write_run(root, run_id, started_at=started_at, **record, **fields)
            publish_catalogue(root)

    record_run(device=config.device, status="running")
    epochs: list[dict] = []
    score_name = "R-sum" if task == "image_sentence" else "accuracy"
    log(f"training run {run_id}: {task} / {network} on {dataset}, {context.world_size} process(es)")

    def on_epoch(epoch: EpochRecord) -> None:
        # Written every epoch so the UI and SQL show a run's progress while it trains.
        epochs.append(epoch.to_dict())
        write_epochs(root, run_id, epochs)
        publish_catalogue(root)
        score = epoch.val_score if epoch.val_score is None else round(epoch.val_score, 3)
        log(
            f"epoch {epoch.epoch}: loss {epoch.loss:.4f}, validation {score_name} {score}, "
            f"{epoch.seconds:.1f}s"
        )

    train_started = time.perf_counter()
    try:
        result = train(
            config,
            splits["train"].data,
            None if val is None else val.data,
            checkpoint_dir(root, run_id),
            on_epoch=on_epoch,
            progress=_step_logger(log, progress_every_s),
        )
    except BaseException:
        record_run(device=config.device, status="failed", finished_at=utc_now())
        raise
    seconds = time.perf_counter() - train_started
    # The result lists resumed epochs too, which this process's on_epoch never saw.
    all_epochs = [e.to_dict() for e in result.epochs]
    promoted, reason = False, f"rank {context.rank} does not record the run"
    if recording:
        write_epochs(root, run_id, all_epochs)
        finished = {
            "device": result.device,
            "status": "finished",
            "finished_at": utc_now(),
            "best_epoch": result.best_epoch,
            "best_val_score": result.best_val_score,
            "checkpoint": str(result.best_checkpoint),
        }
        record_run(**finished)
        promoted, reason = promote_if_better(
            root, run_id, task, network, dataset, result.best_val_score, fingerprints, scope
        )
        record_run(**finished, champion_reason=reason)
        log(reason)
    manifest = TrainedModel(
        run_id=run_id,
        task=task,
        network=network,
        dataset=dataset,
        checkpoint=str(result.best_checkpoint),
        features=dict(inputs),
        graph=graph_record,
        fingerprints=fingerprints,
        best_epoch=result.best_epoch,
        best_val_score=result.best_val_score,
        best_val_metrics=result.best_val_metrics,
        champion=promoted,
        champion_reason=reason,
        validation_scope=None if scope is None else scope.describe(),
        device=result.device,
        feature_placement=result.feature_placement,
        world_size=context.world_size,
    )
    return TrainingRun(
        manifest=manifest,
        score_name=score_name,
        rows=_training_rows(splits["train"].data),
        seconds=round(seconds, 2),
        epochs_run=len(all_epochs),
        resumed_from_epoch=result.resumed_from_epoch,
        stopped_early=result.stopped_early,
        config=record["config"],
        curves_png=curves_png(all_epochs, score_name),
        world_size=context.world_size,
    )
