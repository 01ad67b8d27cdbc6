"""Training assets: one per task × network, each a recorded, resumable training run."""

import json
import time
from typing import Literal

import dagster as dg
import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from assets.deployment import accelerator_step_tags  # noqa: E402
from assets.metadata import png  # noqa: E402
from assets.partitions import DATASETS  # noqa: E402
from assets.resources import ComputeSettings, TwobranchStorage  # noqa: E402
from assets.skips import skip_reason, skipped_output  # noqa: E402
from ops.dataset_store import load_dataset_table  # noqa: E402
from ops.paths import checkpoint_dir  # noqa: E402
from ops.results_store import publish_catalogue, utc_now  # noqa: E402
from ops.run_records import (  # noqa: E402
    file_identity,
    make_run_id,
    promote_if_better,
    write_epochs,
    write_run,
)
from ops.training.config import TrainConfig  # noqa: E402
from ops.training.data import ImageSentenceData, PhraseRegionData  # noqa: E402
from ops.training.trainer import train  # noqa: E402
from ops.training_inputs import (  # noqa: E402
    first_images,
    image_sentence_splits,
    phrase_region_splits,
)

TRAINING_GROUP = "training"
NETWORK_DEFAULTS = {
    "embedding": {"lr": 1e-4, "hidden_dim": 2048},
    "similarity": {"lr": 5e-5, "hidden_dim": 1024},
}


class TrainingConfig(dg.Config):
    """Hyper-parameters; the paper's values are the defaults (see METHOD.md). ``lr`` and
    ``hidden_dim`` left unset take the network's default (embedding 1e-4 / 2048, similarity
    5e-5 / 1024). ``val_max_images`` > 0 validates on the first N validation images only
    (the similarity network scores every pair, so its per-epoch validation is costly)."""

    epochs: int = 20
    lr: float | None = None
    lr_decay: float = 0.794
    apply_lr_decay: bool = True
    batch_images: int = 500
    sentences_per_image: int = 2
    sampler: Literal["neighborhood", "triplet"] = "neighborhood"
    hidden_dim: int | None = None
    embed_dim: int = 512
    fusion_dim: int = 1024
    dropout: float = 0.5
    margin: float = 0.05
    top_k: int = 10
    lambda_sentence: float = 1.5
    lambda_image: float = 1.0
    lambda_neighbor: float = 0.05
    lambda_region_neighbor: float = 0.05
    loss_kind: Literal["topk_hinge", "vse_hardest"] = "topk_hinge"
    similarity_batch: int = 200
    negatives_per_positive: int = 2
    phrases_per_batch: int = 200
    positive_iou: float = 0.6
    negative_iou: float = 0.3
    early_stopping_patience: int = 5
    seed: int = 0
    max_train_steps_per_epoch: int | None = None
    val_max_images: int = 0


def train_config(config: TrainingConfig, task: str, network: str, device: str) -> TrainConfig:
    values = config.model_dump()
    values.pop("val_max_images")  # applied to the data, not to the trainer
    for key, default in NETWORK_DEFAULTS[network].items():
        if values.get(key) is None:
            values[key] = default
    return TrainConfig(task=task, network=network, device=device, **values)


def curves_plot(epochs: pd.DataFrame, score_name: str):
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 2.8))
    left.plot(epochs["epoch"], epochs["loss"], marker="o", color="#c44e52")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    right.plot(epochs["epoch"], epochs["val_score"], marker="o", color="#4c72b0")
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation {score_name}")
    figure.tight_layout()
    return figure


def _load_splits(task: str, inputs: dict, root, dataset: str):
    if task == "image_sentence":
        return image_sentence_splits(inputs["image_features"], inputs["text_features"])
    return phrase_region_splits(
        inputs["region_features"],
        pd.read_parquet(inputs["region_proposals"]),
        inputs["phrase_features"],
        load_dataset_table(root, dataset, "phrases"),
    )


def _training_rows(data: ImageSentenceData | PhraseRegionData) -> int:
    texts = data.text_features if isinstance(data, ImageSentenceData) else data.phrase_features
    return int(texts.shape[0])


def run_training(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    task: str,
    network: str,
    inputs: dict,
    dataset: str,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    root = storage.root
    cfg = train_config(config, task, network, compute.device)
    run_id = make_run_id(
        task,
        network,
        dataset,
        cfg.model_dump(mode="json"),
        {name: file_identity(path) for name, path in inputs.items()},
    )
    splits = _load_splits(task, inputs, root, dataset)
    if "train" not in splits:
        raise dg.Failure(f"no training data for {task}: the train split is empty")
    val = splits.get("val")
    if task == "image_sentence" and val is not None:
        val = first_images(val, config.val_max_images)
    started_at = utc_now()
    record = {
        "task": task,
        "network": network,
        "dataset": dataset,
        "config": cfg.model_dump(mode="json"),
        "features": inputs,
    }
    write_run(root, run_id, device=cfg.device, status="running", started_at=started_at, **record)
    publish_catalogue(root)
    epochs: list[dict] = []
    score_name = "R-sum" if task == "image_sentence" else "accuracy"
    context.log.info(f"training run {run_id}: {task} / {network} on {dataset}")

    def on_epoch(epoch) -> None:
        epochs.append(epoch.to_dict())
        write_epochs(root, run_id, epochs)
        context.log.info(
            f"epoch {epoch.epoch}: loss {epoch.loss:.4f}, validation {score_name} "
            f"{epoch.val_score if epoch.val_score is None else round(epoch.val_score, 3)}, "
            f"{epoch.seconds:.1f}s"
        )

    last_logged = [time.monotonic()]

    def progress(epoch: int, step: int, steps: int) -> None:
        if time.monotonic() - last_logged[0] > 15:
            last_logged[0] = time.monotonic()
            context.log.info(f"epoch {epoch}: step {step}/{steps}")

    train_started = time.perf_counter()
    try:
        result = train(
            cfg,
            splits["train"].data,
            None if val is None else val.data,
            checkpoint_dir(root, run_id),
            on_epoch=on_epoch,
            progress=progress,
        )
    except BaseException:
        write_run(
            root,
            run_id,
            device=cfg.device,
            status="failed",
            started_at=started_at,
            finished_at=utc_now(),
            **record,
        )
        raise
    seconds = time.perf_counter() - train_started
    all_epochs = [e.to_dict() for e in result.epochs]
    write_epochs(root, run_id, all_epochs)
    write_run(
        root,
        run_id,
        device=result.device,
        status="finished",
        started_at=started_at,
        finished_at=utc_now(),
        best_epoch=result.best_epoch,
        best_val_score=result.best_val_score,
        checkpoint=str(result.best_checkpoint),
        **record,
    )
    promoted, reason = promote_if_better(
        root, run_id, task, network, dataset, result.best_val_score
    )
    publish_catalogue(root)
    context.log.info(reason)
    frame = pd.DataFrame(all_epochs)
    figure = curves_plot(frame, score_name)
    plot = png(figure)
    plt.close(figure)
    manifest = {
        "run_id": run_id,
        "task": task,
        "network": network,
        "dataset": dataset,
        "checkpoint": str(result.best_checkpoint),
        "features": inputs,
        "best_epoch": result.best_epoch,
        "best_val_score": result.best_val_score,
        "best_val_metrics": result.best_val_metrics,
        "champion": promoted,
        "champion_reason": reason,
        "device": result.device,
    }
    return dg.Output(
        manifest,
        metadata={
            "run_id": run_id,
            # Training sentences or phrases, each seen once per epoch.
            "rows": _training_rows(splits["train"].data),
            "seconds": round(seconds, 2),
            "device": result.device,
            "best_epoch": result.best_epoch,
            f"best_val_{score_name}": result.best_val_score,
            "best_val_metrics": dg.MetadataValue.json(result.best_val_metrics),
            "epochs_run": len(all_epochs),
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_early": result.stopped_early,
            "champion": promoted,
            "champion_reason": reason,
            "curves": plot,
            "config": dg.MetadataValue.json(json.loads(json.dumps(record["config"]))),
            "checkpoint": dg.MetadataValue.path(str(result.best_checkpoint)),
        },
    )


@dg.asset(
    group_name=TRAINING_GROUP,
    kinds={"pytorch"},
    deps=["neighborhood_graph"],
    op_tags=accelerator_step_tags(),
    partitions_def=DATASETS,
)
def image_sentence_embedding_net(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    image_features: dict,
    text_features: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """The embedding network for image–sentence retrieval: bi-directional top-K ranking
    loss with the sentence neighborhood constraint, trained on neighborhood batches."""
    inputs = {"image_features": image_features["path"], "text_features": text_features["path"]}
    return run_training(
        context,
        config,
        "image_sentence",
        "embedding",
        inputs,
        image_features["dataset"],
        storage,
        compute,
    )


@dg.asset(
    group_name=TRAINING_GROUP,
    kinds={"pytorch"},
    deps=["neighborhood_graph"],
    op_tags=accelerator_step_tags(),
    partitions_def=DATASETS,
)
def image_sentence_similarity_net(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    image_features: dict,
    text_features: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """The similarity network for image–sentence retrieval: element-wise product fusion,
    logistic loss over positive and sampled negative pairs."""
    inputs = {"image_features": image_features["path"], "text_features": text_features["path"]}
    return run_training(
        context,
        config,
        "image_sentence",
        "similarity",
        inputs,
        image_features["dataset"],
        storage,
        compute,
    )


def _phrase_inputs(region_features: dict, region_proposals: dict, phrase_features: dict):
    return {
        "region_features": region_features["path"],
        "region_proposals": region_proposals["path"],
        "phrase_features": phrase_features["path"],
    }


@dg.asset(
    group_name=TRAINING_GROUP,
    kinds={"pytorch"},
    deps=["neighborhood_graph"],
    op_tags=accelerator_step_tags(),
    partitions_def=DATASETS,
)
def phrase_region_embedding_net(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    region_features: dict,
    region_proposals: dict,
    phrase_features: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """The embedding network for phrase localization, with the region–region neighborhood
    term (regions positive for the same phrase are neighbors)."""
    if reason := skip_reason(region_features, phrase_features):
        return skipped_output(region_features["dataset"], reason)
    return run_training(
        context,
        config,
        "phrase_region",
        "embedding",
        _phrase_inputs(region_features, region_proposals, phrase_features),
        region_features["dataset"],
        storage,
        compute,
    )


@dg.asset(
    group_name=TRAINING_GROUP,
    kinds={"pytorch"},
    deps=["neighborhood_graph"],
    op_tags=accelerator_step_tags(),
    partitions_def=DATASETS,
)
def phrase_region_similarity_net(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    region_features: dict,
    region_proposals: dict,
    phrase_features: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """The similarity network for phrase localization (positives IoU ≥ 0.6, negatives
    IoU < 0.3), logistic loss."""
    if reason := skip_reason(region_features, phrase_features):
        return skipped_output(region_features["dataset"], reason)
    return run_training(
        context,
        config,
        "phrase_region",
        "similarity",
        _phrase_inputs(region_features, region_proposals, phrase_features),
        region_features["dataset"],
        storage,
        compute,
    )


TRAINING_ASSETS = [
    image_sentence_embedding_net,
    image_sentence_similarity_net,
    phrase_region_embedding_net,
    phrase_region_similarity_net,
]
