"""Settings of the CNN feature stages: each field, its default and the source of its default
written once. The stages' Dagster config is built from these models (``assets``), and the
ops functions take them whole."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source
from ops.storage.parquet_io import FeatureDtype

_PROJECT = source("project")


class ImageFeatureSettings(BaseModel):
    """CNN image features: any torchvision classification backbone by name.

    ``weights``: ``none`` (random init, seeded), a torchvision weights name such as
    ``IMAGENET1K_V1`` (from the torch cache), or a local state-dict file. ``shards`` splits
    the images into that many contiguous parts, each extracted in its own step.
    ``feature_dtype``: how the features are stored (``float16`` halves the file and its
    cache; training and evaluation compute in float32 either way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = Field(
        "resnet18",
        description="torchvision classification backbone",
        json_schema_extra=source("project", "paper: vgg19 (configs/paper_*.yaml)"),
    )
    weights: str = Field(
        "none",
        description="none (random init), a torchvision weights name, or a state-dict file",
        json_schema_extra=source("project", "paper: ImageNet weights"),
    )
    image_size: int | None = Field(
        None,
        description="square input size (crop size with ten_crop); none: the backbone's own",
        json_schema_extra=source("paper", "224"),
    )
    ten_crop: bool = Field(
        False,
        description="average ten crops of the image resized to 256/224 of the crop size",
        json_schema_extra=source("project", "paper: true"),
    )
    batch_size: int = Field(
        64, ge=1, description="images per forward pass", json_schema_extra=_PROJECT
    )
    shards: int = Field(
        1, ge=1, description="parallel extraction steps", json_schema_extra=_PROJECT
    )
    feature_dtype: FeatureDtype = Field(
        "float32", description="how the features are stored", json_schema_extra=_PROJECT
    )
