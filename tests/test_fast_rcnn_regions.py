"""The Fast R-CNN region path on a tiny VGG-shaped network with random weights: stride-16
trunk, aspect-keeping resize, pooling into the network's own fc6/fc7."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.ops import roi_align, roi_pool

from ops.features.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    build_backbone,
    resize_transform,
)
from ops.features.fast_rcnn import AspectResize, fast_rcnn_backbone, fast_rcnn_size
from ops.features.region_features import extract_region_features, region_variant
from ops.features.settings import RegionFeatureSettings as Settings
from ops.storage.parquet_io import read_features, read_schema
from tests.region_images import write_region_setup

HEAD_DIM = 24


def read_metadata(path: Path) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (read_schema(path).metadata or {}).items()}


def tiny_vgg() -> Backbone:
    """Five 3×3 conv + 2×2 max-pool stages (stride 32) and a 7×7 → fc6 → fc7 classifier."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        channels = 3
        for width in (8, 8, 16, 16, 16):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
            channels = width
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(1),
            nn.Linear(channels * 49, 32),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(32, HEAD_DIM),
            nn.ReLU(),
        )
    return Backbone(
        name="vgg_tiny",
        family="vgg",
        trunk=nn.Sequential(*layers).eval(),
        head=head.eval(),
        dim=HEAD_DIM,
        stride=32,
        transform=resize_transform(224),
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights="none",
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    return write_region_setup(tmp_path)


def test_resize_rule_keeps_aspect_and_caps_the_longer_side() -> None:
    assert fast_rcnn_size(48, 32, 600, 1000) == (900, 600)
    assert fast_rcnn_size(40, 40, 600, 1000) == (600, 600)
    # 32×56 at shorter side 600 would be 1,050 long: the longer side is capped instead.
    assert fast_rcnn_size(32, 56, 600, 1000) == (571, 1000)
    assert fast_rcnn_size(2000, 1000, 600, 1000) == (1000, 500)
    assert fast_rcnn_size(100, 20, 600, 1000) == (1000, 200)
    assert fast_rcnn_size(300, 200, shorter_side=100, max_longer_side=120) == (120, 80)
    with pytest.raises(ValueError, match="shorter_side"):
        AspectResize(600, 500, IMAGENET_MEAN, IMAGENET_STD)


def test_trunk_is_cut_at_stride_16() -> None:
    full = tiny_vgg()
    net = fast_rcnn_backbone(full, 600, 1000)
    assert net.stride == 16 and len(net.trunk) == len(full.trunk) - 1
    assert net.head is full.head
    with torch.inference_mode():
        assert net.trunk(torch.zeros(1, 3, 600, 904)).shape[-2:] == (37, 56)
    # Shifting the image right by 16 px moves the map by exactly one cell, so a box moved by
    # 16 px pools the same values; on the stride-32 map half a cell is not the same.
    rng = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 256, 256, generator=rng)
    shifted = torch.zeros(1, 3, 256, 272)
    shifted[..., 16:] = image
    box = torch.tensor([[0.0, 96.0, 96.0, 160.0, 160.0]])
    moved = box + torch.tensor([[0.0, 16.0, 0.0, 16.0, 0.0]])
    with torch.inference_mode():
        maps, maps_shifted = net.trunk(image), net.trunk(shifted)
        assert maps.shape[-1] == 16 and maps_shifted.shape[-1] == 17
        torch.testing.assert_close(maps_shifted[..., 4:12, 5:13], maps[..., 4:12, 4:12])
        here = roi_pool(maps, box, 7, 1 / 16)
        there = roi_pool(maps_shifted, moved, 7, 1 / 16)
        torch.testing.assert_close(here, there)
        coarse = roi_align(full.trunk(image), box, 7, 1 / 32, -1, True)
        coarse_moved = roi_align(full.trunk(shifted), moved, 7, 1 / 32, -1, True)
        assert (coarse - coarse_moved).abs().max() > 1e-3


def test_extraction_pools_the_resized_image(setup, tmp_path: Path) -> None:
    images, proposals, proposals_path = setup
    out = tmp_path / "regions.parquet"
    stats = extract_region_features(
        images,
        proposals_path,
        out,
        Settings(region_path="auto", roi_pooling="max", spatial_features=False),
        num_workers=0,
        device="auto",
        network=tiny_vgg(),
    )
    assert stats.region_path == "fast_rcnn" and stats.dim == HEAD_DIM
    assert stats.variant == "vgg_tiny_frcnn600x1000_roimax"
    metadata = read_metadata(out)
    assert metadata["region_path"] == "fast_rcnn" and metadata["stride"] == "16"
    assert metadata["roi_pooling"] == "max" and metadata["roi_output_size"] == "7"
    ids, regions = read_features(out)
    assert ids["region_id"].tolist() == proposals["region_id"].tolist()
    assert regions.shape == (len(proposals), HEAD_DIM)
    # Image r2 is 32×56 → 571×1000: box (32/3, 14, 32, 55) scaled by 571/32 and 1000/56.
    net = fast_rcnn_backbone(tiny_vgg(), 600, 1000)
    source = Image.open(images["path"].iloc[2]).convert("RGB")
    pixels = net.transform(source)[None]
    assert pixels.shape[-2:] == (1000, 571)
    row = 4 * 2 + 2
    box = proposals[["x1", "y1", "x2", "y2"]].to_numpy()[row]
    factors = np.array([571 / 32, 1000 / 56, 571 / 32, 1000 / 56])
    # One scale for both sides, up to the rounding of the sizes.
    assert abs(factors[0] / factors[1] - 1) < 1e-3
    rois = torch.tensor([[0.0, *(box * factors)]], dtype=torch.float32)
    with torch.inference_mode():
        expected = net.head(roi_pool(net.trunk(pixels), rois, 7, 1 / 16))[0].numpy()
    np.testing.assert_allclose(regions[row], expected, atol=1e-5, rtol=1e-5)
    # The whole-image box and a quarter box of the same image give different vectors.
    for image_index in range(3):
        whole, small = regions[4 * image_index], regions[4 * image_index + 1]
        assert np.abs(whole - small).max() > 1e-4


def test_roi_align_and_spatial_columns_on_the_fast_rcnn_path(setup, tmp_path: Path) -> None:
    images, proposals, proposals_path = setup
    out = tmp_path / "regions.parquet"
    stats = extract_region_features(
        images,
        proposals_path,
        out,
        Settings(region_path="fast_rcnn", shorter_side=64, max_longer_side=96),
        num_workers=0,
        device="auto",
        network=tiny_vgg(),
    )
    assert stats.variant == "vgg_tiny_frcnn64x96_spatial" and stats.dim == HEAD_DIM + 5
    _, regions = read_features(out)
    net = fast_rcnn_backbone(tiny_vgg(), 64, 96)
    pixels = net.transform(Image.open(images["path"].iloc[0]).convert("RGB"))[None]
    assert pixels.shape[-2:] == (64, 96)  # 48×32 → 96×64
    rois = torch.tensor([[0.0, 2 * 2.0, 2 * 3.0, 2 * 24.0, 2 * 16.0]])
    with torch.inference_mode():
        pooled = roi_align(net.trunk(pixels), rois, 7, 1 / 16, -1, True)
        expected = net.head(pooled)[0].numpy()
    np.testing.assert_allclose(regions[1, :HEAD_DIM], expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(regions[0, HEAD_DIM:], [0, 0, 1, 1, 1])


def test_square_path_is_kept_on_request_and_for_other_families(setup, tmp_path: Path) -> None:
    images, _, proposals_path = setup
    square = extract_region_features(
        images,
        proposals_path,
        tmp_path / "square.parquet",
        Settings(region_path="square", image_size=64),
        num_workers=0,
        device="auto",
        network=tiny_vgg(),
    )
    assert square.region_path == "square" and square.variant == "vgg_tiny_64_spatial"
    assert read_metadata(tmp_path / "square.parquet")["stride"] == "32"
    with pytest.raises(ValueError, match="image_size 64 sets the square path"):
        extract_region_features(
            images,
            proposals_path,
            tmp_path / "x.parquet",
            Settings(image_size=64),
            num_workers=0,
            device="auto",
            network=tiny_vgg(),
        )
    with pytest.raises(ValueError, match="needs a VGG or AlexNet backbone.*not the resnet"):
        extract_region_features(
            images,
            proposals_path,
            tmp_path / "x.parquet",
            Settings(region_path="fast_rcnn"),
            num_workers=0,
            device="auto",
        )
    assert region_variant(Settings(region_path="auto")) == "resnet18_spatial"
    assert region_variant(Settings(backbone="vgg19")) == "vgg19_frcnn600x1000_spatial"
    square = Settings(backbone="vgg19", image_size=224, region_path="square")
    assert region_variant(square) == "vgg19_224_spatial"


def test_torchvision_vgg_and_alexnet_cut_before_their_last_pool() -> None:
    for name, grid in (("vgg11", 7), ("alexnet", 6)):
        full = build_backbone(name)
        net = fast_rcnn_backbone(full, 600, 1000)
        assert isinstance(list(full.trunk)[-1], nn.MaxPool2d)
        assert list(net.trunk) == list(full.trunk)[:-1]
        with torch.inference_mode():
            maps = net.trunk(torch.zeros(1, 3, 160, 256))
            vectors = net.head(roi_pool(maps, torch.tensor([[0.0, 0, 0, 255, 159]]), grid, 1 / 16))
        assert vectors.shape == (1, 4096)
        if name == "vgg11":
            assert maps.shape[-2:] == (10, 16)
