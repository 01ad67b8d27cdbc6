"""Training configuration: one validated record per run, stored as JSON in every checkpoint."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.losses import EmbeddingLossConfig, LossKind
from ops.metrics.localization_rule import IOU_THRESHOLD
from ops.setting_sources import source

# The loss's defaults live with the loss (models/ cannot import ops/); read here, not retyped.
_LOSS = EmbeddingLossConfig()

Task = Literal["image_sentence", "phrase_region"]
Network = Literal["embedding", "similarity"]
# "auto" is the task's usual side, resolved when the config is built.
NegativeSideSetting = Literal["auto", "caption", "image", "mixed"]

# Fields that may change between a run and its resumption without changing what the finished
# epochs mean: the run length, the patience, and where it runs (a data-parallel run trains on
# the same global batches as one process). The run id leaves exactly these out, so a run asked
# for more epochs, or on another device, continues from the same checkpoints.
RESUMABLE_CHANGES = frozenset({"epochs", "early_stopping_patience", "device", "distributed"})
# Fields that older checkpoints carry but the config no longer has: ``positive_iou`` is the
# neighborhood graph's setting now (the graph holds the positives).
RETIRED_FIELDS = frozenset({"positive_iou"})


class DistributedSettings(BaseModel):
    """Data-parallel training under ``torchrun``: ``nproc_per_node`` processes (one per GPU, or
    CPU processes) on each of ``nnodes`` machines. Every rank embeds a slice of the same global
    batch, so the batch sizes above stay global. ``backend`` ``auto`` is NCCL on CUDA, gloo on
    CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nproc_per_node: int = Field(1, ge=1, description="processes per machine (one per GPU)")
    nnodes: int = Field(1, ge=1, description="machines; more than one needs Kubernetes")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="collective backend; auto: nccl on CUDA, gloo on CPU"
    )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run. Each field records where its default comes from
    (paper, authors' code, lab code or project choice; README's table of settings lists
    them, see METHOD.md).

    ``lr`` and ``hidden_dim`` default to the embedding network's 1e-4 and 2048; the lab's
    similarity network used 5e-5 and 1024, which callers set explicitly. ``apply_lr_decay``
    applies the per-epoch decay the authors' code built but never used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Task = Field("image_sentence", json_schema_extra=source("project", "set per asset"))
    network: Network = Field("embedding", json_schema_extra=source("project", "set per asset"))
    epochs: int = Field(20, ge=1, json_schema_extra=source("authors"))
    lr: float = Field(
        1e-4, gt=0, json_schema_extra=source("authors", "embedding; similarity 5e-5 (lab)")
    )
    lr_decay: float = Field(
        0.794, gt=0, le=1, json_schema_extra=source("authors", "per epoch; built, never applied")
    )
    apply_lr_decay: bool = Field(True, json_schema_extra=source("lab", "the lab's forks apply it"))
    weight_decay: float = Field(0.0, ge=0, json_schema_extra=source("authors"))

    # Embedding network, image–sentence: neighborhood (or triplet) batches. With
    # ``knn_sentence_neighbors`` a sentence's neighborhood also holds its nearest sentences by
    # feature (the graph's kNN edges; each anchor brings one into its batch); the paper's is
    # the other sentences of its image only.
    batch_images: int = Field(500, ge=2, json_schema_extra=source("authors"))
    sentences_per_image: int = Field(2, ge=1, json_schema_extra=source("authors", "sample size"))
    sampler: Literal["neighborhood", "triplet"] = Field(
        "neighborhood", json_schema_extra=source("authors")
    )
    knn_sentence_neighbors: bool = Field(
        False, json_schema_extra=source("paper", "off: the paper's same-image neighborhoods")
    )

    # Network widths.
    hidden_dim: int = Field(
        2048, ge=1, json_schema_extra=source("authors", "embedding; similarity 1024 (lab)")
    )
    embed_dim: int = Field(512, ge=1, json_schema_extra=source("authors"))
    fusion_dim: int = Field(1024, ge=1, json_schema_extra=source("lab"))
    dropout: float = Field(0.5, ge=0, lt=1, json_schema_extra=source("authors"))
    # PyTorch's convention, running = (1 − p)·running + p·batch. The authors' TensorFlow code
    # passes momentum=0.1 to tf.layers.batch_normalization, whose rule is
    # running = 0.1·running + 0.9·batch: PyTorch's 0.9. The default keeps PyTorch's 0.1.
    batch_norm_momentum: float = Field(
        0.1,
        gt=0,
        le=1,
        json_schema_extra=source(
            "project", "PyTorch's default; the authors' TF momentum 0.1 is PyTorch's 0.9"
        ),
    )

    # Ranking loss (embedding network).
    margin: float = Field(_LOSS.margin, ge=0, json_schema_extra=source("authors"))
    top_k: int = Field(_LOSS.top_k, ge=1, json_schema_extra=source("authors"))
    lambda_sentence: float = Field(
        _LOSS.lambda_sentence, json_schema_extra=source("authors", "sentence-anchored term, λ1")
    )
    lambda_image: float = Field(
        _LOSS.lambda_image,
        json_schema_extra=source(
            "authors", "image-anchored term, weight 1 there (not the paper's λ2)"
        ),
    )
    lambda_neighbor: float = Field(
        _LOSS.lambda_neighbor,
        json_schema_extra=source("authors", "sentence–sentence term, λ3; lab forks 0.1"),
    )
    lambda_region_neighbor: float = Field(
        _LOSS.lambda_region_neighbor,
        json_schema_extra=source("project", "region–region term; no published value, λ3 reused"),
    )
    lambda_phrase_neighbor: float = Field(
        _LOSS.lambda_phrase_neighbor,
        ge=0,
        json_schema_extra=source("project", "phrase–phrase term over entity chains; 0 = off"),
    )
    loss_kind: LossKind = Field(
        _LOSS.kind, json_schema_extra=source("authors", "top-K hinge over negatives")
    )

    # Similarity network: positives per batch, sampled negatives per positive, and which side
    # of a positive pair a negative replaces: "caption" keeps the image (region) and takes
    # another sentence (phrase), "image" keeps the text and takes another image (region),
    # "mixed" picks per negative; "auto" is the task's usual side — caption for
    # image–sentence, image for phrase–region (another region of the phrase's image, the lab's).
    similarity_batch: int = Field(200, ge=1, json_schema_extra=source("lab"))
    negatives_per_positive: int = Field(2, ge=0, json_schema_extra=source("lab"))
    negative_side: NegativeSideSetting = Field(
        "auto",
        json_schema_extra=source(
            "lab", "phrases: other regions of the image (lab); sentences: other captions (project)"
        ),
    )

    # Phrase–region task: phrases per batch (whole images are added until reached), the IoU
    # below which a region is a phrase's negative (positives are the graph's), and whether
    # regions of the other images in a batch also count as negatives.
    phrases_per_batch: int = Field(200, ge=1, json_schema_extra=source("project"))
    negative_iou: float = Field(0.3, ge=0, le=1, json_schema_extra=source("lab"))
    cross_image_negatives: bool = Field(False, json_schema_extra=source("project"))
    localization_iou: float = Field(
        IOU_THRESHOLD, gt=0, le=1, json_schema_extra=source("paper", "accuracy at IoU ≥ 0.5")
    )

    early_stopping_patience: int | None = Field(5, ge=1, json_schema_extra=source("lab"))
    seed: int = Field(0, json_schema_extra=source("project"))
    device: str = Field("auto", json_schema_extra=source("project", "set per run"))
    amp: bool = Field(
        True, json_schema_extra=source("project", "bf16 autocast on CUDA; the paper is fp32")
    )
    eval_chunk: int = Field(1024, ge=1, json_schema_extra=source("project"))
    max_train_steps_per_epoch: int | None = Field(
        None, ge=1, json_schema_extra=source("project", "no cap")
    )
    distributed: DistributedSettings = Field(
        DistributedSettings(), json_schema_extra=source("project", "one process")
    )

    @model_validator(mode="before")
    @classmethod
    def _task_negative_side(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("negative_side", "auto") == "auto":
            task = values.get("task", "image_sentence")
            side = "caption" if task == "image_sentence" else "image"
            values = {**values, "negative_side": side}
        return values

    def loss_config(self) -> EmbeddingLossConfig:
        return EmbeddingLossConfig(
            margin=self.margin,
            top_k=self.top_k,
            lambda_sentence=self.lambda_sentence,
            lambda_image=self.lambda_image,
            lambda_neighbor=self.lambda_neighbor,
            lambda_region_neighbor=self.lambda_region_neighbor,
            lambda_phrase_neighbor=self.lambda_phrase_neighbor,
            kind=self.loss_kind,
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        values = json.loads(text)
        return cls.model_validate({k: v for k, v in values.items() if k not in RETIRED_FIELDS})

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as ``{name: (self value, other value)}``."""
        mine, theirs = self.model_dump(), other.model_dump()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}
