"""Image-feature throughput and memory: the full pipeline against the bare forward pass.

    .venv/bin/python benchmarks/bench_image_features.py [--n 200] [--size 128] [--regions]

Prints (1) images/s of ``extract_image_features`` (decode in workers + forward + Parquet write)
against the backbone alone on the same preprocessed tensors (goal ≥ 85 %), (2) peak RSS of
extracting N and 4N images, each in a fresh process (goal ≤ 10 % growth), and with
``--regions`` (3) proposal and region-feature throughput at their defaults.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from ops.features.backbones import build_backbone
from ops.features.image_features import extract_image_features
from ops.features.settings import ImageFeatureSettings


def synthetic_images(folder: Path, count: int, size: int, seed: int = 0) -> pd.DataFrame:
    """Coloured rectangles and ellipses on a plain background, with noise, as JPEG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.integers(0, size * 3 // 4, 2)
            w, h = rng.integers(size // 10, size // 2, 2)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = draw.rectangle if rng.integers(0, 2) else draw.ellipse
            shape([int(x), int(y), int(x + w), int(y + h)], fill=fill)
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (size, size, 3))
        path = folder / f"img{index:05d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        rows.append(("bench", f"img{index:05d}", "train", str(path), size, size))
    return pd.DataFrame(rows, columns=["dataset", "image_id", "split", "path", "width", "height"])


def bare_forward_rate(images: pd.DataFrame, size: int, batch_size: int) -> float:
    net = build_backbone("resnet18", "none", size)
    net.modules_to(torch.device("cpu"), channels_last=True)
    tensors = torch.stack([net.transform(Image.open(p).convert("RGB")) for p in images["path"]])
    tensors = tensors.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        net.head(net.trunk(tensors[:batch_size]))  # warm-up: kernel selection
        started = time.perf_counter()
        for begin in range(0, len(tensors), batch_size):
            net.head(net.trunk(tensors[begin : begin + batch_size])).float().numpy()
        return len(tensors) / (time.perf_counter() - started)


def pipeline_rates(
    images: pd.DataFrame, out: Path, size: int, batch_size: int
) -> tuple[float, float]:
    """(end-to-end images/s including model build and worker start, steady-state images/s).

    Steady state runs from the first written batch to the last, which is what throughput on
    a large dataset converges to; the fixed start-up weighs heavily on a few hundred images.
    """
    marks: list[tuple[float, int]] = []

    def mark(done: int, total: int) -> None:
        marks.append((time.perf_counter(), done))

    stats = extract_image_features(
        images,
        out,
        ImageFeatureSettings(image_size=size, batch_size=batch_size),
        num_workers=2,
        device="cpu",
        progress=mark,
    )
    (first_time, first_done), (last_time, last_done) = marks[0], marks[-1]
    steady = (last_done - first_done) / (last_time - first_time) if len(marks) > 1 else 0.0
    return stats.images_per_second, steady


def child_peak_rss(count: int, folder: Path, size: int) -> None:
    images = synthetic_images(folder / f"rss{count}", count, size, seed=1)
    # Measure only the extraction: reset nothing, but report the high-water mark after it.
    extract_image_features(
        images,
        folder / f"rss{count}.parquet",
        ImageFeatureSettings(image_size=size),
        num_workers=2,
        device="cpu",
    )
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_mib(count: int, folder: Path, size: int) -> float:
    command = [sys.executable, __file__, "--child-rss", str(count), "--dir", str(folder)]
    command += ["--size", str(size)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is KiB on Linux


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool and loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def region_rates(images: pd.DataFrame, folder: Path) -> list[tuple[str, str, str]]:
    """Proposal and region-feature rates at their defaults, with CPU seconds per image.

    CPU time is far less sensitive than wall time to other processes on the machine; on two
    idle cores a perfectly parallel step takes about ``cpu_per_image * n / 2`` seconds.
    """
    from ops.features.proposals import propose_regions
    from ops.features.region_features import extract_region_features
    from ops.features.settings import ProposalSettings, RegionFeatureSettings

    count = len(images)
    before = cpu_seconds()
    proposals = propose_regions(
        images, folder / "proposals.parquet", ProposalSettings(), num_workers=2
    )
    proposal_cpu = (cpu_seconds() - before) / count
    before = cpu_seconds()
    regions = extract_region_features(
        images,
        folder / "proposals.parquet",
        folder / "regions.parquet",
        RegionFeatureSettings(),
        num_workers=2,
        device="cpu",
    )
    region_cpu = (cpu_seconds() - before) / count
    return [
        ("proposals (images/s)", f"{proposals.images_per_second:.1f}", "selective_search_fast"),
        ("proposals, CPU ms per image", f"{1000 * proposal_cpu:.1f}", ""),
        ("proposals per image", f"{proposals.proposals_per_image:.1f}", "incl. whole image"),
        ("region features (images/s)", f"{regions.images_per_second:.1f}", "resnet18, 224 px"),
        ("region features, CPU ms per image", f"{1000 * region_cpu:.1f}", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--regions", action="store_true")
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_peak_rss(args.child_rss, args.dir, args.size)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = synthetic_images(folder / "images", args.n, args.size)
        load_before = os.getloadavg()[0]
        # Best of two alternating runs each, to damp noise from other processes.
        bare, full, steady = [], [], []
        for _ in range(2):
            bare.append(bare_forward_rate(images, args.size, args.batch_size))
            rates = pipeline_rates(images, folder / "f.parquet", args.size, args.batch_size)
            full.append(rates[0])
            steady.append(rates[1])
        rss_small = peak_rss_mib(args.n, folder, args.size)
        rss_large = peak_rss_mib(4 * args.n, folder, args.size)
        rows = [
            ("bare forward (images/s)", f"{max(bare):.1f}", ""),
            ("full pipeline, end to end (images/s)", f"{max(full):.1f}", "with start-up"),
            ("full pipeline, steady (images/s)", f"{max(steady):.1f}", ""),
            ("steady pipeline / bare", f"{max(steady) / max(bare):.1%}", "goal ≥ 85%"),
            ("end-to-end pipeline / bare", f"{max(full) / max(bare):.1%}", ""),
            (f"peak RSS, {args.n} images (MiB)", f"{rss_small:.0f}", ""),
            (f"peak RSS, {4 * args.n} images (MiB)", f"{rss_large:.0f}", ""),
            ("RSS growth", f"{rss_large / rss_small - 1:+.1%}", "goal ≤ 10%"),
        ]
        if args.regions:
            rows += region_rates(images, folder)
        load_after = os.getloadavg()[0]
    print(f"resnet18, {args.size} px, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"1-min load average: {load_before:.1f} before, {load_after:.1f} after")
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>8}  {note}")


if __name__ == "__main__":
    main()
