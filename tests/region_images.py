"""Three small random images of different sizes and their region proposals, for the region
feature and sharding tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ops.storage.parquet_io import write_table

SIZES = [(48, 32), (40, 40), (32, 56)]


def make_images(folder: Path) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for index, (width, height) in enumerate(SIZES):
        path = folder / f"r{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        rows.append(("tiny", f"r{index}", "test", str(path), width, height))
    return pd.DataFrame(rows, columns=["dataset", "image_id", "split", "path", "width", "height"])


def make_proposals(images: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for image_id, width, height in images[["image_id", "width", "height"]].itertuples(index=False):
        boxes = [
            (0.0, 0.0, float(width), float(height)),
            (2.0, 3.0, width / 2, height / 2),
            (width / 3, height / 4, float(width), float(height) - 1),
        ]
        for rank, box in enumerate(boxes):
            rows.append((image_id, f"{image_id}/r{rank}", *box, "proposal", rank))
        rows.append((image_id, f"{image_id}/g0", 1.0, 1.0, 9.0, 9.0, "ground_truth", 0))
    return pd.DataFrame(
        rows, columns=["image_id", "region_id", "x1", "y1", "x2", "y2", "source", "rank"]
    )


def write_region_setup(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(images, proposals, the proposals' Parquet file) under ``tmp_path``."""
    folder = tmp_path / "images"
    folder.mkdir()
    images = make_images(folder)
    proposals = make_proposals(images)
    proposals_path = tmp_path / "proposals.parquet"
    write_table(proposals_path, proposals)
    return images, proposals, proposals_path
