"""Training speed and memory of the embedding network at the paper's dimensions.

Random features (image 4096-d, text 6000-d → 2048 → 512), neighborhood batches of 500 images
× 2 sentences, the real training loop (``ops.training.train``), CUDA when present. Prints
steps/s after a warm-up and the peak memory: CUDA ``max_memory_allocated`` on GPU, the
process's ``ru_maxrss`` on CPU.

    python benchmarks/bench_training.py --steps 20
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from ops.data.tables import CAPTIONS_PER_IMAGE
from ops.device import resolve_device
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData
from ops.training.trainer import train


def _random_data(n_images: int, image_dim: int, text_dim: int, seed: int) -> ImageSentenceData:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n_images, image_dim), dtype=np.float32)
    caption_image = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
    texts = rng.standard_normal((caption_image.size, text_dim), dtype=np.float32)
    return ImageSentenceData(images, texts, caption_image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--network", choices=["embedding", "similarity"], default="embedding")
    parser.add_argument("--image-dim", type=int, default=4096)
    parser.add_argument("--text-dim", type=int, default=6000)
    parser.add_argument("--batch-images", type=int, default=500)
    args = parser.parse_args()

    device = resolve_device(args.device)
    total = args.steps + args.warmup
    # One epoch holds every step: captions = batch × steps (the sampler drops the tail).
    per_step = args.batch_images if args.network == "embedding" else 200
    n_images = (per_step * total) // CAPTIONS_PER_IMAGE + 1
    data = _random_data(n_images, args.image_dim, args.text_dim, seed=0)
    config = TrainConfig(
        network=args.network,
        epochs=1,
        batch_images=args.batch_images,
        hidden_dim=2048 if args.network == "embedding" else 1024,
        lr=1e-4 if args.network == "embedding" else 5e-5,
        device=str(device),
        amp=not args.no_amp,
        max_train_steps_per_epoch=total,
    )
    marks: dict[int, float] = {}

    def progress(epoch: int, step: int, steps: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks[step] = time.perf_counter()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as checkpoints:
        train(config, data, None, checkpoints, progress=progress)
    timed = max(marks) - args.warmup
    seconds = marks[max(marks)] - marks[args.warmup]
    steps_per_second = timed / seconds
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_label = "CUDA max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_label = "ru_maxrss"
    sentences = per_step * (config.sentences_per_image if args.network == "embedding" else 3)
    device_label = str(device)
    if device.type == "cuda":
        device_label += f" ({torch.cuda.get_device_name(device)})"
    rows = [
        ("device", device_label),
        ("network", f"{args.network} {args.image_dim}/{args.text_dim} → {config.hidden_dim} → 512"),
        ("batch", f"{args.batch_images} images × {config.sentences_per_image} sentences"
         if args.network == "embedding" else f"{per_step} positives × 3 pairs"),
        ("amp (bf16)", str(config.amp and device.type == "cuda")),
        ("timed steps", str(timed)),
        ("steps/s", f"{steps_per_second:.2f}"),
        ("text rows/s", f"{steps_per_second * sentences:.0f}"),
        (f"peak memory ({peak_label})", f"{peak:.0f} MiB"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
