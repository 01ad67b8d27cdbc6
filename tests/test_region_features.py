from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.ops import roi_align

from ops.features.backbones import build_backbone
from ops.features.image_features import extract_image_features
from ops.features.region_features import (
    extract_region_features,
    proposal_groups,
    region_variant,
    spatial_columns,
)
from ops.features.settings import ImageFeatureSettings
from ops.features.settings import RegionFeatureSettings as Settings
from ops.storage.parquet_io import read_features, write_table
from tests.region_images import write_region_setup


@pytest.fixture
def setup(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    return write_region_setup(tmp_path)


def test_whole_image_box_equals_image_feature(setup, tmp_path: Path) -> None:
    images, proposals, proposals_path = setup
    regions_out, image_out = tmp_path / "regions.parquet", tmp_path / "images.parquet"
    # 64 px input → a 2×2 map; a 2×2 RoI grid over the whole map samples each cell exactly.
    stats = extract_region_features(
        images,
        proposals_path,
        regions_out,
        Settings(image_size=64, spatial_features=False, batch_size=2),
        num_workers=0,
        device="auto",
        roi_output_size=2,
    )
    extract_image_features(
        images, image_out, ImageFeatureSettings(image_size=64), num_workers=0, device="auto"
    )
    ids, regions = read_features(regions_out)
    _, whole = read_features(image_out)
    assert stats.rows == len(proposals) == len(ids) and stats.dim == 512
    assert ids["region_id"].tolist() == proposals["region_id"].tolist()
    assert ids["image_id"].tolist() == proposals["image_id"].tolist()
    whole_rows = ids.index[ids["region_id"].str.endswith("/r0")]
    np.testing.assert_allclose(regions[whole_rows], whole, atol=1e-5, rtol=1e-5)
    # Other boxes see other parts of the map.
    assert np.abs(regions[whole_rows + 1] - regions[whole_rows]).max() > 1e-3


def test_box_scaling_matches_a_manual_roi_align(setup, tmp_path: Path) -> None:
    images, proposals, proposals_path = setup
    out = tmp_path / "regions.parquet"
    extract_region_features(
        images,
        proposals_path,
        out,
        Settings(image_size=96),
        num_workers=0,
        device="auto",
        roi_output_size=3,
    )
    _, regions = read_features(out)
    net = build_backbone("resnet18", "none", 96)
    row = 1  # image r0 (48×32), box (2, 3, 24, 16)
    pixels = net.transform(Image.open(images["path"].iloc[0]).convert("RGB"))[None]
    box = torch.tensor([[0.0, 2 * 2.0, 3 * 3.0, 2 * 24.0, 3 * 16.0]])  # 96/48 = 2, 96/32 = 3
    with torch.inference_mode():
        pooled = roi_align(net.trunk(pixels), box, 3, 1 / 32, -1, True)
        expected = net.head(pooled)[0].numpy()
    np.testing.assert_allclose(regions[row, :512], expected, atol=1e-4, rtol=1e-4)


def test_spatial_features_are_appended(setup, tmp_path: Path) -> None:
    images, proposals, proposals_path = setup
    out = tmp_path / "regions.parquet"
    stats = extract_region_features(
        images,
        proposals_path,
        out,
        Settings(image_size=32, batch_size=2),
        num_workers=2,
        device="auto",
    )
    assert stats.dim == 517 and stats.variant == "resnet18_32_spatial"
    _, regions = read_features(out)
    sizes = images.set_index("image_id").loc[proposals["image_id"], ["width", "height"]]
    boxes = proposals[["x1", "y1", "x2", "y2"]].to_numpy()
    expected = spatial_columns(boxes, sizes["width"].to_numpy(), sizes["height"].to_numpy())
    np.testing.assert_allclose(regions[:, 512:], expected, rtol=1e-6)
    # Image r0 is 48×32: box (2, 3, 24, 16).
    np.testing.assert_allclose(
        regions[1, 512:], [2 / 48, 3 / 32, 0.5, 0.5, (22 / 48) * (13 / 32)], rtol=1e-6
    )
    np.testing.assert_allclose(regions[0, 512:], [0, 0, 1, 1, 1])


def test_proposal_groups_stream_across_reads(setup) -> None:
    _, proposals, proposals_path = setup
    groups = list(proposal_groups(proposals_path, rows_per_read=3))
    assert [image_id for image_id, _, _ in groups] == ["r0", "r1", "r2"]
    assert [len(regions) for _, regions, _ in groups] == [4, 4, 4]
    np.testing.assert_allclose(
        np.concatenate([boxes for _, _, boxes in groups]),
        proposals[["x1", "y1", "x2", "y2"]].to_numpy(),
    )


def test_bad_proposal_files_are_named(setup, tmp_path: Path) -> None:
    images, proposals, _ = setup
    scattered = tmp_path / "scattered.parquet"
    write_table(scattered, pd.concat([proposals.iloc[:2], proposals.iloc[4:], proposals.iloc[2:4]]))
    with pytest.raises(ValueError, match=r"scattered\.parquet.*not contiguous"):
        extract_region_features(
            images, scattered, tmp_path / "x.parquet", Settings(), num_workers=0, device="auto"
        )
    stranger = tmp_path / "stranger.parquet"
    write_table(stranger, proposals.assign(image_id="nope"))
    with pytest.raises(ValueError, match=r"stranger\.parquet.*not in the images table"):
        extract_region_features(
            images, stranger, tmp_path / "x.parquet", Settings(), num_workers=0, device="auto"
        )
    assert not (tmp_path / "x.parquet").exists()


def test_region_variant_names() -> None:
    assert region_variant(Settings()) == "resnet18_spatial"
    square = Settings(backbone="vgg19", region_path="square", image_size=448)
    assert region_variant(square.model_copy(update={"spatial_features": False})) == "vgg19_448"
    imagenet = Settings(backbone="vgg19", weights="IMAGENET1K_V1", region_path="square")
    assert region_variant(imagenet) == "vgg19_imagenet1k_v1_spatial"
