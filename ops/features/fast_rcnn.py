"""Fast R-CNN-style region features (Girshick, ICCV 2015), the form the paper's lab used.

The image keeps its aspect ratio: its shorter side is scaled to ``shorter_side`` (600) unless
that would make its longer side exceed ``max_longer_side`` (1,000), in which case the longer
side is scaled to that cap. The trunk is the network's conv layers without their last max-pool
(VGG conv5_3, stride 16), and each box is pooled to the grid the network's own classifier
takes (7 × 7 for VGG, 6 × 6 for AlexNet) and sent through fc6 → fc7.

Only networks whose trunk ends in a stride-2 max-pool over a stride-32 map, followed by a
classifier on a fixed grid, have this form here; every other family keeps the square path
(``ops.features.region_features``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torchvision import transforms as T

from ops.features.backbones import Backbone
from ops.features.settings import RegionPath, RegionPathSetting

# Family → the grid its classifier's fc6 reads (its adaptive pool's output size).
FAST_RCNN_GRIDS = {"vgg": 7, "alexnet": 6}
FAST_RCNN_STRIDE = 16


def resolve_region_path(family: str, setting: RegionPathSetting) -> RegionPath:
    """``auto``: Fast R-CNN for the families that have it, the square path otherwise."""
    if setting == "square":
        return "square"
    if family in FAST_RCNN_GRIDS:
        return "fast_rcnn"
    if setting == "fast_rcnn":
        raise ValueError(
            f"region_path fast_rcnn needs a VGG or AlexNet backbone (a stride-16 trunk with a "
            f"classifier head), not the {family} family; use region_path square or auto"
        )
    return "square"


def fast_rcnn_size(
    width: int, height: int, shorter_side: int, max_longer_side: int
) -> tuple[int, int]:
    """``(width, height)`` of the resized image: shorter side to ``shorter_side``, unless the
    longer side would then exceed ``max_longer_side``; the aspect ratio is kept."""
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}×{height} is empty")
    scale = shorter_side / min(width, height)
    if max(width, height) * scale > max_longer_side:
        scale = max_longer_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class AspectResize:
    """Resize by :func:`fast_rcnn_size`, then tensor and normalize; a class so DataLoader
    workers can pickle it."""

    def __init__(
        self,
        shorter_side: int,
        max_longer_side: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if shorter_side < 1 or max_longer_side < shorter_side:
            raise ValueError(
                f"shorter_side {shorter_side} and max_longer_side {max_longer_side}: need "
                "1 ≤ shorter_side ≤ max_longer_side"
            )
        self.shorter_side = shorter_side
        self.max_longer_side = max_longer_side
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, image: Any) -> torch.Tensor:
        width, height = fast_rcnn_size(*image.size, self.shorter_side, self.max_longer_side)
        resized = T.functional.resize(image, [height, width], antialias=True)
        return self.to_tensor(resized)


def fast_rcnn_backbone(net: Backbone, shorter_side: int, max_longer_side: int) -> Backbone:
    """``net`` with its trunk cut before the last max-pool (stride 16) and the aspect-keeping
    resize as its transform; the head (fc6 → fc7 after ReLU) is the network's own."""
    if net.family not in FAST_RCNN_GRIDS:
        resolve_region_path(net.family, "fast_rcnn")  # raises the one clear error
    layers = list(net.trunk) if isinstance(net.trunk, nn.Sequential) else []
    last = layers[-1] if layers else None
    if not isinstance(last, nn.MaxPool2d) or net.stride != 2 * FAST_RCNN_STRIDE:
        raise ValueError(
            f"backbone {net.name}: its trunk does not end in the stride-2 max-pool of a "
            f"stride-{2 * FAST_RCNN_STRIDE} network, so it cannot be cut at stride 16"
        )
    return dataclasses.replace(
        net,
        trunk=nn.Sequential(*layers[:-1]).eval(),
        stride=FAST_RCNN_STRIDE,
        transform=AspectResize(shorter_side, max_longer_side, net.mean, net.std),
        input_size=shorter_side,
    )
