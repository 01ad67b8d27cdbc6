"""Region-feature throughput: the Fast R-CNN path against the square path, same backbone.

    .venv/bin/python benchmarks/bench_region_features.py [--backbone alexnet] [--n 12]
        [--sizes 128,500x375] [--proposals 150]

For each image size, N synthetic images with ``--proposals`` fixed boxes each go through
``extract_region_features`` twice with the same random-init backbone: ``square`` (the image
squashed to the backbone's 224 px, pooled from the stride-32 map) and ``fast_rcnn`` (shorter
side 600, longer at most 1,000, stride-16 map, 7 × 7 / 6 × 6 RoI max pooling). Prints images/s
end to end (model build, decode, trunk, head, write) and steady (from the first written batch
to the last, what a large dataset converges to), regions/s, and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_image_features import synthetic_images
from PIL import Image

from ops.features.region_features import RegionFeatureStats, extract_region_features
from ops.features.settings import RegionFeatureSettings
from ops.storage.parquet_io import write_table


def parse_size(text: str) -> tuple[int, int]:
    """``128`` (square) or ``500x375`` (width × height)."""
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def sized_images(folder: Path, count: int, width: int, height: int) -> pd.DataFrame:
    """The benchmark's synthetic scenes, resized to ``width × height``."""
    images = synthetic_images(folder, count, max(width, height))
    for path in images["path"]:
        with Image.open(path) as image:
            image.resize((width, height)).save(path, quality=90)
    return images.assign(width=width, height=height)


def fixed_boxes(images: pd.DataFrame, per_image: int) -> pd.DataFrame:
    """``per_image`` boxes of varied size and place per image (the same for every image)."""
    rng = np.random.default_rng(0)
    rows = []
    for image_id, width, height in images[["image_id", "width", "height"]].itertuples(index=False):
        x1 = rng.uniform(0, 0.7, per_image) * width
        y1 = rng.uniform(0, 0.7, per_image) * height
        x2 = np.minimum(width, x1 + rng.uniform(0.1, 0.9, per_image) * width)
        y2 = np.minimum(height, y1 + rng.uniform(0.1, 0.9, per_image) * height)
        for rank in range(per_image):
            box = (x1[rank], y1[rank], x2[rank], y2[rank])
            rows.append((image_id, f"{image_id}/r{rank}", *box, "proposal", rank))
    return pd.DataFrame(
        rows, columns=["image_id", "region_id", "x1", "y1", "x2", "y2", "source", "rank"]
    )


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_path(
    images: pd.DataFrame, proposals: Path, out: Path, backbone: str, path: str
) -> tuple[RegionFeatureStats, float]:
    """The extraction's stats and its steady images/s."""
    marks: list[tuple[float, int]] = []

    def mark(done: int, total: int) -> None:
        marks.append((time.perf_counter(), done))

    stats = extract_region_features(
        images,
        proposals,
        out,
        RegionFeatureSettings(
            backbone=backbone,
            region_path=path,  # type: ignore[arg-type]
            roi_pooling="max" if path == "fast_rcnn" else "align",
            spatial_features=False,
            batch_size=4,
        ),
        num_workers=1,
        device="cpu",
        progress=mark,
    )
    (first_time, first_done), (last_time, last_done) = marks[0], marks[-1]
    steady = (last_done - first_done) / (last_time - first_time) if len(marks) > 1 else 0.0
    return stats, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="alexnet")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--sizes", default="128,500x375")
    parser.add_argument("--proposals", type=int, default=150)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.sizes.split(","):
            width, height = parse_size(text)
            folder = Path(tmp) / f"{width}x{height}"
            images = sized_images(folder / "images", args.n, width, height)
            proposals = folder / "proposals.parquet"
            write_table(proposals, fixed_boxes(images, args.proposals))
            for path in ("square", "fast_rcnn"):
                stats, steady = run_path(
                    images, proposals, folder / f"{path}.parquet", args.backbone, path
                )
                rows.append(
                    (
                        f"{width}×{height}",
                        path,
                        stats.images_per_second,
                        steady,
                        stats.regions_per_second,
                        peak_rss_mib(),
                    )
                )
    load_after = os.getloadavg()[0]
    print(
        f"{args.backbone} (random init), {args.n} images × {args.proposals} boxes, "
        f"{torch.get_num_threads()} threads; 1-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after"
    )
    print(
        f"{'image':>9}  {'path':<9}  {'images/s':>8}  {'steady':>8}  {'regions/s':>9}  "
        f"{'peak RSS MiB':>12}"
    )
    for size, path, images_rate, steady, regions_rate, rss in rows:
        print(
            f"{size:>9}  {path:<9}  {images_rate:8.2f}  {steady:8.2f}  {regions_rate:9.0f}  "
            f"{rss:12.0f}"
        )


if __name__ == "__main__":
    main()
