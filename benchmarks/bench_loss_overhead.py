"""Cost of neighborhood sampling + the ranking loss over the bare two-branch forward/backward.

Paper dimensions: image 4096-d, text 6000-d, branches 2048 → 512, batch 500 anchors × 2
sentences. Times (a) forward+backward with a trivial loss (sum of outputs) on a fixed batch,
(b) a full step: neighborhood sampling, feature gather, forward, ``embedding_loss``, backward.
Prints medians and the overhead (b − a) / a. The steps run round-robin so they see the same
load; on an oversubscribed CPU, ``--threads 1`` and the CPU-time column are the steadier read
(many small multi-threaded kernels suffer most when threads get preempted).

    python benchmarks/bench_loss_overhead.py [--device auto|cpu|cuda] [--iters 10] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import EmbeddingLossConfig, EmbeddingNet, NeighborhoodSampler, embedding_loss
from ops.data.tables import CAPTIONS_PER_IMAGE

IMAGE_DIM, TEXT_DIM, HIDDEN_DIM, EMBED_DIM = 4096, 6000, 2048, 512
BATCH_IMAGES, SENTENCES_PER_IMAGE = 500, 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process); on a shared CPU the second is steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _interleaved(
    steps: list[Callable[[], None]], device: torch.device, warmup: int, iters: int
) -> list[list[tuple[float, float]]]:
    """Runs the steps round-robin so that they see the same machine load."""
    for _ in range(warmup):
        for step in steps:
            step()
    _sync(device)
    times: list[list[tuple[float, float]]] = [[] for _ in steps]
    for _ in range(iters):
        for step, record in zip(steps, times, strict=True):
            record.append(_time(step, device))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--images", type=int, default=31_783, help="images in the dataset")
    parser.add_argument("--pool", type=int, default=2_000, help="distinct feature rows held")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device_name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if device_name == "auto" else device_name)

    torch.manual_seed(0)
    n_images = args.images
    caption_image = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
    # Features are looked up modulo a small pool: the gather costs the same as from a full
    # Flickr30K-sized table, without holding 150k x 6000 floats.
    image_pool = torch.randn(args.pool, IMAGE_DIM, device=device)
    text_pool = torch.randn(args.pool, TEXT_DIM, device=device)
    net = EmbeddingNet(IMAGE_DIM, TEXT_DIM, HIDDEN_DIM, EMBED_DIM).to(device).train()
    config = EmbeddingLossConfig()
    sampler = NeighborhoodSampler(caption_image, BATCH_IMAGES, SENTENCES_PER_IMAGE, seed=0)

    first = next(iter(sampler))
    fixed_images = image_pool[torch.as_tensor(first.image_idx % args.pool, device=device)]
    fixed_texts = text_pool[torch.as_tensor(first.caption_idx % args.pool, device=device)]

    def bare_step() -> None:
        net.zero_grad(set_to_none=True)
        u, v = net(fixed_images, fixed_texts)
        (u.sum() + v.sum()).backward()

    batches = iter(())

    def next_batch():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            sampler.set_epoch(sampler.epoch + 1)
            batches = iter(sampler)
            batch = next(batches)
        return batch

    def full_step() -> None:
        batch = next_batch()
        image_idx = torch.as_tensor(batch.image_idx % args.pool, device=device)
        caption_idx = torch.as_tensor(batch.caption_idx % args.pool, device=device)
        text_image = torch.as_tensor(batch.caption_to_batch_image, device=device)
        net.zero_grad(set_to_none=True)
        u, v = net(image_pool[image_idx], text_pool[caption_idx])
        loss, _ = embedding_loss(u, v, text_image, config)
        loss.backward()

    def loss_only() -> None:
        u = torch.nn.functional.normalize(torch.randn(500, EMBED_DIM, device=device), dim=1)
        v = torch.nn.functional.normalize(torch.randn(1000, EMBED_DIM, device=device), dim=1)
        u.requires_grad_(True)
        v.requires_grad_(True)
        loss, _ = embedding_loss(u, v, torch.arange(500, device=device).repeat(2), config)
        loss.backward()

    def sampling_only() -> None:
        next_batch()

    names = [
        "(a) forward+backward, sum loss",
        "(b) sampling + embedding_loss step",
        "    embedding_loss fwd+bwd alone",
        "    neighborhood sampling alone",
    ]
    times = _interleaved(
        [bare_step, full_step, loss_only, sampling_only], device, args.warmup, args.iters
    )
    print(
        f"device={device} torch threads={torch.get_num_threads()} batch={len(first.image_idx)} "
        f"images x {len(first.caption_idx)} sentences (first batch), iters={args.iters}"
    )
    print(f"{'measure':<38}{'wall median ms':>16}{'wall min ms':>13}{'CPU median ms':>15}")
    for name, record in zip(names, times, strict=True):
        wall = [w for w, _ in record]
        cpu = [c for _, c in record]
        print(
            f"{name:<38}{statistics.median(wall) * 1e3:>16.1f}{min(wall) * 1e3:>13.1f}"
            f"{statistics.median(cpu) * 1e3:>15.1f}"
        )
    for label, which in (("wall", 0), ("CPU", 1)):
        bare = statistics.median(t[which] for t in times[0])
        full = statistics.median(t[which] for t in times[1])
        paired = statistics.median(
            b[which] / a[which] - 1 for a, b in zip(times[0], times[1], strict=True)
        )
        print(
            f"overhead (b - a) / a, {label} time: {100 * (full - bare) / bare:.1f} % of medians, "
            f"{100 * paired:.1f} % median of paired runs (goal <= 25 %)"
        )


if __name__ == "__main__":
    main()
