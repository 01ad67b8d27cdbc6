"""Ablations of the embedding network on stored features of a materialized dataset.

Trains the image–sentence embedding network with the neighborhood term on and off, with
neighborhood and triplet sampling, and prints validation recalls as a table. The similarity
network's row is read from the results of the last `make run` when present.

    .venv/bin/python benchmarks/ablation_synthetic.py [--data-root data] [--epochs 15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ops.paths import data_root
from ops.training import TrainConfig, train
from ops.training_inputs import image_sentence_splits

DEMO = {
    "lr": 1e-3,
    "hidden_dim": 1024,
    "embed_dim": 256,
    "margin": 0.2,
    "dropout": 0.1,
    "batch_images": 128,
}
VARIANTS = {
    "neighborhood sampling + neighborhood term (default)": {},
    "neighborhood sampling, no neighborhood term": {"lambda_neighbor": 0.0},
    "triplet sampling + neighborhood term": {"sampler": "triplet"},
    "triplet sampling, no neighborhood term": {"sampler": "triplet", "lambda_neighbor": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = data_root(args.data_root) / "features" / args.dataset
    image_path = next(features.glob("image_*.parquet"))
    text_path = next(features.glob("text_*.parquet"))
    splits = image_sentence_splits(image_path, text_path, ("train", "val"))
    print(f"features: {image_path.name}, {text_path.name}")
    print("| variant | val i2t R@1/5/10 | val t2i R@1/5/10 | R-sum | seconds |")
    print("|---|---|---|---|---|")
    for name, change in VARIANTS.items():
        config = TrainConfig(device="cpu", epochs=args.epochs, **(DEMO | change))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = train(config, splits["train"].data, splits["val"].data, folder)
        m = result.best_val_metrics
        i2t = "/".join(f"{m[f'i2t_r{k}']:.1f}" for k in (1, 5, 10))
        t2i = "/".join(f"{m[f't2i_r{k}']:.1f}" for k in (1, 5, 10))
        seconds = time.perf_counter() - started
        print(f"| {name} | {i2t} | {t2i} | {m['rsum']:.1f} | {seconds:.0f} |", flush=True)
    print(json.dumps({"epochs": args.epochs, "profile": DEMO}))


if __name__ == "__main__":
    main()
