"""Settings of the dataset stage: how the run's dataset is acquired and parsed, each field,
its default and the source of its default written once. The stage's Dagster config is built
from this model (``assets``), and the acquisition and parsing functions take it whole."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source

_SYNTHETIC = source("project", "the embedded synthetic dataset's size")


class DatasetSettings(BaseModel):
    """How to read the run's dataset (which dataset: the run's partition, a registered name).
    The ``synthetic_*`` settings size a dataset whose source is ``synthetic``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(
        0, description="seed of the synthetic dataset", json_schema_extra=source("project")
    )
    synthetic_train_images: int = Field(
        5000, ge=0, description="synthetic training images", json_schema_extra=_SYNTHETIC
    )
    synthetic_val_images: int = Field(
        1000, ge=0, description="synthetic validation images", json_schema_extra=_SYNTHETIC
    )
    synthetic_test_images: int = Field(
        1000, ge=0, description="synthetic test images", json_schema_extra=_SYNTHETIC
    )
    synthetic_image_size: int = Field(
        128, description="synthetic images' side in pixels", json_schema_extra=_SYNTHETIC
    )
    restval_to_train: bool = Field(
        True,
        description="COCO's restval images join the training split",
        json_schema_extra=source("paper", "COCO: 113,287 training images"),
    )
    check_images: bool = Field(
        True,
        description="open every image; bad ones are skipped and listed in rejects",
        json_schema_extra=source("project"),
    )
    min_images_per_split: int = Field(
        1,
        ge=1,
        description="fewest images a split may keep once bad images are gone (else the run stops)",
        json_schema_extra=source("project"),
    )
