"""Whole-image CNN features, streamed batch by batch to a feature Parquet file.

Images are decoded and preprocessed in DataLoader workers; the backbone runs in eval mode
under ``torch.inference_mode`` (channels-last memory, and bf16 autocast with pinned memory on
CUDA). Each batch is written as it is computed, so memory does not grow with the dataset, and
the file appears only when the whole dataset has been written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ops.device import autocast_context, pin_memory_for, resolve_device
from ops.features.backbones import Backbone, build_backbone, ten_crop_transform, variant_name
from ops.features.settings import ImageFeatureSettings
from ops.storage.parquet_io import FeatureWriter

Progress = Callable[[int, int], None]
IMAGE_ID_COLUMNS = {"image_id": pa.string(), "split": pa.string()}


@dataclass(frozen=True)
class ImageFeatureStats:
    rows: int
    dim: int
    seconds: float
    images_per_second: float
    variant: str


def image_variant(
    backbone: str, ten_crop: bool = False, image_size: int | None = None, weights: str = "none"
) -> str:
    """File-name variant: ``resnet18``, ``resnet18_128``, ``vgg19_imagenet1k_v1_10crop``
    (random-init weights add nothing; other weights add :func:`weights_tag`)."""
    return variant_name(backbone, weights, image_size, "10crop" if ten_crop else "")


class ImageFileDataset(Dataset):
    """Decodes image files to RGB and applies ``transform``; yields ``(tensor, (w, h))``."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Any], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from err
        size = torch.tensor(rgb.size, dtype=torch.int64)
        return self.transform(rgb), size


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, device: torch.device
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory_for(device),
        prefetch_factor=2 if num_workers > 0 else None,
    )


def check_columns(frame: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")


def to_device(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    pixels = pixels.to(device, non_blocking=True)
    return pixels.contiguous(memory_format=torch.channels_last)


def embed_batch(
    backbone: Backbone, pixels: torch.Tensor, device: torch.device, amp: bool = True
) -> torch.Tensor:
    """``head(trunk(pixels))`` as float32 on the CPU; ``(B, 10, 3, h, w)`` averages the crops."""
    crops = pixels.dim() == 5
    batch = pixels.flatten(0, 1) if crops else pixels
    with autocast_context(device, amp):
        vectors = backbone.head(backbone.trunk(to_device(batch, device)))
    vectors = vectors.float()
    if crops:
        vectors = vectors.view(pixels.shape[0], pixels.shape[1], -1).mean(dim=1)
    return vectors.cpu()


def extract_image_features(
    images: pd.DataFrame,
    out_path: Path,
    settings: ImageFeatureSettings,
    *,
    num_workers: int,
    device: str,
    dataset: str = "",
    progress: Progress | None = None,
) -> ImageFeatureStats:
    """One ``backbone.dim`` vector per row of ``images``, in the frame's order, to ``out_path``.

    ``ten_crop``: the paper's protocol (shorter side 256, ten 224 crops, averaged); with
    ``image_size`` the crop is ``image_size`` and the shorter side scales alike.
    """
    check_columns(images, ["image_id", "split", "path"], "images table")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    backbone, weights, image_size = settings.backbone, settings.weights, settings.image_size
    net = build_backbone(backbone, weights, image_size)
    net.modules_to(torch_device, channels_last=True)
    transform = (
        ten_crop_transform(image_size or 224, net.mean, net.std)
        if settings.ten_crop
        else net.transform
    )
    variant = image_variant(backbone, settings.ten_crop, image_size, weights)
    image_ids = images["image_id"].astype(str).to_numpy()
    splits = images["split"].astype(str).to_numpy()
    loader = make_loader(
        ImageFileDataset(images["path"].astype(str).tolist(), transform),
        settings.batch_size,
        num_workers,
        torch_device,
    )
    metadata = {
        "kind": "image",
        "dataset": dataset,
        "backbone": backbone,
        "weights": weights,
        "variant": variant,
        "image_size": str(image_size or net.input_size),
        "ten_crop": str(bool(settings.ten_crop)),
    }
    total = len(images)
    done = 0
    with FeatureWriter(out_path, IMAGE_ID_COLUMNS, net.dim, metadata) as writer:
        with torch.inference_mode():
            for pixels, _sizes in loader:
                vectors = embed_batch(net, pixels, torch_device)
                stop = done + vectors.shape[0]
                writer.write(
                    {"image_id": image_ids[done:stop], "split": splits[done:stop]},
                    np.asarray(vectors.numpy(), dtype=np.float32),
                )
                done = stop
                if progress is not None:
                    progress(done, total)
    seconds = time.perf_counter() - started
    return ImageFeatureStats(
        rows=done,
        dim=net.dim,
        seconds=seconds,
        images_per_second=done / seconds if seconds > 0 else 0.0,
        variant=variant,
    )
