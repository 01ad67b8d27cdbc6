"""Similarity-network training on the phrase task: embedding each region and phrase of a
batch once (the trainer's way) against embedding every (phrase, region) pair row.

    python benchmarks/bench_similarity_pairs.py [--steps 6] [--region-dim 4101] [--text-dim 6000]

Random features; each image has ``--regions`` candidate boxes and ``--phrases`` phrases, with
four jittered candidates around each phrase's box; 200 phrases per batch, 2 negatives per
positive: the pair rows repeat each region and phrase several times, as real batches do.
Prints steps/s of both ways and the pair and unique-item counts of a batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from ops.device import resolve_device
from ops.graph.build import GraphSettings, positive_regions
from ops.training import batch_plans, loss_step
from ops.training.config import TrainConfig
from ops.training.data import PhraseRegionData
from ops.training.trainer import train


def _phrase_data(n_images: int, regions: int, phrases: int, dims: tuple[int, int]):
    """Per image: ``phrases`` object boxes, four jittered candidates around each (the
    positives a proposal method finds), the rest of the ``regions`` candidates at random."""
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 300, size=(n_images, phrases, 2))
    objects = np.concatenate([corner, corner + rng.uniform(60, 200, size=corner.shape)], 2)
    jittered = np.repeat(objects, 4, axis=1) + rng.uniform(-6, 6, (n_images, 4 * phrases, 4))
    corner = rng.uniform(0, 300, size=(n_images, regions - 4 * phrases, 2))
    random = np.concatenate([corner, corner + rng.uniform(30, 200, size=corner.shape)], 2)
    region_boxes = np.clip(np.concatenate([jittered, random], axis=1), 0, None)
    # Positive pairs by the neighborhood graph's rule, image by image.
    pairs = [
        positive_regions(objects[image], region_boxes[image], GraphSettings().positive_iou)[:2]
        for image in range(n_images)
    ]
    return PhraseRegionData(
        region_features=rng.standard_normal((n_images * regions, dims[0]), dtype=np.float32),
        region_image=np.repeat(np.arange(n_images), regions),
        region_boxes=region_boxes.reshape(-1, 4),
        phrase_features=rng.standard_normal((n_images * phrases, dims[1]), dtype=np.float32),
        phrase_image=np.repeat(np.arange(n_images), phrases),
        phrase_boxes=objects.reshape(-1, 4),
        region_is_gt=np.zeros(n_images * regions, dtype=bool),
        positive_phrase=np.concatenate(
            [image * phrases + rows for image, (rows, _) in enumerate(pairs)]
        ),
        positive_region=np.concatenate(
            [image * regions + cols for image, (_, cols) in enumerate(pairs)]
        ),
    )


def _steps_per_second(config: TrainConfig, data: PhraseRegionData, warmup: int) -> float:
    marks: dict[int, float] = {}

    def progress(epoch: int, step: int, steps: int) -> None:
        marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as checkpoints:
        train(config, data, None, checkpoints, progress=progress)
    last = max(marks)
    return (last - warmup) / (marks[last] - marks[warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--phrases", type=int, default=10)
    parser.add_argument("--region-dim", type=int, default=4101)
    parser.add_argument("--text-dim", type=int, default=6000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    total = args.steps + args.warmup
    n_images = total * 200 // args.phrases + 1
    data = _phrase_data(n_images, args.regions, args.phrases, (args.region_dim, args.text_dim))
    config = TrainConfig(
        task="phrase_region",
        network="similarity",
        epochs=1,
        device=str(device),
        max_train_steps_per_epoch=total,
    )
    batch = next(iter(batch_plans.BatchPlan(config, data)))
    unique = _steps_per_second(config, data, args.warmup)
    original = loss_step._has_repeated_items
    loss_step._has_repeated_items = lambda batch: False  # every pair row embedded
    try:
        per_pair = _steps_per_second(config, data, args.warmup)
    finally:
        loss_step._has_repeated_items = original
    print(f"device {device}; dims {args.region_dim}/{args.text_dim} → 1024 → 512 → 1024 → 1")
    print(
        f"batch: {batch.image_rows.size:,} pairs of {np.unique(batch.image_rows).size:,} "
        f"regions and {np.unique(batch.text_rows).size:,} phrases"
    )
    print(f"each item once: {unique:.2f} steps/s; every pair row: {per_pair:.2f} steps/s")
    print(f"speed-up: {unique / per_pair:.2f}x")


if __name__ == "__main__":
    main()
