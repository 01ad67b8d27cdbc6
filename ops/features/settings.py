"""Settings of the CNN feature stages (image features, region proposals, region features):
each field, its default and the source of its default written once. The stages' Dagster
config is built from these models (``assets``), and the ops functions take them whole."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source
from ops.storage.parquet_io import FeatureDtype

_PROJECT = source("project")

# How a region is read from the network: the resolved path, and the setting (``auto`` picks
# Fast R-CNN where the backbone's family has it; see ops.features.fast_rcnn).
RegionPath = Literal["square", "fast_rcnn"]
RegionPathSetting = Literal["auto", "square", "fast_rcnn"]
RoiPooling = Literal["align", "max"]
ProposalMethod = Literal["auto", "selective_search_fast", "selective_search_quality", "edge_boxes"]


# The fields both CNN stages have, declared once.
def _backbone() -> Any:
    return Field(
        "resnet18",
        description="torchvision classification backbone",
        json_schema_extra=source("project", "paper: vgg19 (configs/paper_*.yaml)"),
    )


def _weights() -> Any:
    return Field(
        "none",
        description="none (random init), a torchvision weights name, or a state-dict file",
        json_schema_extra=source("project", "paper: ImageNet weights"),
    )


def _shards() -> Any:
    return Field(1, ge=1, description="parallel extraction steps", json_schema_extra=_PROJECT)


def _feature_dtype() -> Any:
    return Field("float32", description="how the features are stored", json_schema_extra=_PROJECT)


class ImageFeatureSettings(BaseModel):
    """CNN image features: any torchvision classification backbone by name.

    ``weights``: ``none`` (random init, seeded), a torchvision weights name such as
    ``IMAGENET1K_V1`` (from the torch cache), or a local state-dict file. ``shards`` splits
    the images into that many contiguous parts, each extracted in its own step.
    ``feature_dtype``: how the features are stored (``float16`` halves the file and its
    cache; training and evaluation compute in float32 either way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = _backbone()
    weights: str = _weights()
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
    shards: int = _shards()
    feature_dtype: FeatureDtype = _feature_dtype()


class ProposalSettings(BaseModel):
    """Region proposals: exactly ``num_proposals`` candidates per image (the paper: 200
    EdgeBoxes), searched at full resolution unless ``max_side`` downscales the image; a search
    that finds fewer is completed by fixed sliding windows (see ops/features/proposals.py).
    ``method: auto`` runs EdgeBoxes when ``edge_model_path`` names OpenCV's structured-edge
    model file (model.yml.gz), selective search otherwise. ``whole_image`` makes the
    whole-image box candidate r0 (not in the paper). ``max_images_per_split`` limits the
    phrase task to a subset of images (0 = all); ``shards`` splits the images into that many
    parts, each searched in its own step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_proposals: int = Field(
        200,
        ge=1,
        description="candidates per image",
        json_schema_extra=source("lab", "200 EdgeBoxes per image"),
    )
    max_side: int | None = Field(
        None,
        ge=16,
        description="search a copy of the image with at most this longer side; none: full size",
        json_schema_extra=source("lab", "full resolution"),
    )
    whole_image: bool = Field(
        False,
        description="the whole-image box is candidate r0",
        json_schema_extra=source("paper", "no whole-image box"),
    )
    method: ProposalMethod = Field(
        "auto",
        description="auto: EdgeBoxes with edge_model_path, selective search otherwise",
        json_schema_extra=source("project", "lab: EdgeBoxes"),
    )
    edge_model_path: str | None = Field(
        None,
        description="OpenCV's structured-edge model file (model.yml.gz) that EdgeBoxes needs",
        json_schema_extra=source("project", "nothing is downloaded: give the file"),
    )
    max_images_per_split: int = Field(
        0,
        ge=0,
        description="phrase-task images per split (0: all)",
        json_schema_extra=source("project", "paper: all"),
    )
    shards: int = Field(1, ge=1, description="parallel search steps", json_schema_extra=_PROJECT)


class RegionFeatureSettings(BaseModel):
    """Region features: each box pooled from the backbone's conv map, then the backbone's head;
    ``spatial_features`` appends the box geometry (x1/W, y1/H, x2/W, y2/H, area);
    ``shards`` splits the images into that many parts, each extracted in its own step;
    ``feature_dtype``: how the features are stored (``float16`` halves the file and its
    cache; training and evaluation compute in float32 either way).

    ``region_path``: ``fast_rcnn`` (VGG, AlexNet: stride-16 trunk on the image resized to
    ``shorter_side``, longer side at most ``max_longer_side``, pooled to the classifier's grid
    for fc6 → fc7, as in the paper's lab), ``square`` (any backbone: the image squashed to
    ``image_size`` square, pooled from the last stride-32 map), or ``auto`` (Fast R-CNN where
    the backbone has it). ``roi_pooling``: ``align`` (RoIAlign) or ``max`` (Fast R-CNN's RoI
    max pooling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = _backbone()
    weights: str = _weights()
    image_size: int | None = Field(
        None,
        description="square path's input size; none: the backbone's own",
        json_schema_extra=source("project", "the Fast R-CNN path resizes by shorter_side"),
    )
    region_path: RegionPathSetting = Field(
        "auto",
        description="fast_rcnn, square, or auto (Fast R-CNN where the backbone has it)",
        json_schema_extra=source("lab", "Fast R-CNN VGG features"),
    )
    shorter_side: int = Field(
        600,
        ge=16,
        description="Fast R-CNN path: the image's shorter side",
        json_schema_extra=source("lab", "Fast R-CNN's 600"),
    )
    max_longer_side: int = Field(
        1000,
        ge=16,
        description="Fast R-CNN path: the image's longer side at most",
        json_schema_extra=source("lab", "Fast R-CNN's 1,000"),
    )
    roi_pooling: RoiPooling = Field(
        "align",
        description="align (RoIAlign) or max (Fast R-CNN's RoI max pooling)",
        json_schema_extra=source("project", "lab: max"),
    )
    spatial_features: bool = Field(
        True,
        description="append the box geometry (5 values) to each vector",
        json_schema_extra=source("project", "paper: false"),
    )
    batch_size: int = Field(
        32, ge=1, description="images per forward pass (square path)", json_schema_extra=_PROJECT
    )
    shards: int = _shards()
    feature_dtype: FeatureDtype = _feature_dtype()
