"""One-shot accelerator check: do the CUDA paths give the CPU's results, and how fast are they?

Comparisons (device result vs the CPU's, same seeds and inputs): a few training epochs of both
networks through the real trainer (float32; bf16 autocast too where the trainer uses it), the
ranking and logistic losses, the retrieval evaluator's ranks, and CNN features. Timings: a
training step of the embedding network at the paper's dimensions (500 images × 2 sentences,
4096/6000 → 2048 → 512), the 5K evaluation (5,000 images × 25,000 captions, 512-d), and CNN
feature extraction in images/s. One table is printed; the exit status is 1 if a comparison
fails.

Without CUDA it runs a small version of everything on the CPU (device = CPU), so the script
itself stays tested:

    python benchmarks/gpu_check.py            # CUDA when present, else the small CPU version
    python benchmarks/gpu_check.py --small    # the small version on any device
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models.losses import embedding_loss, logistic_loss, region_phrase_embedding_loss
from ops.data.tables import CAPTIONS_PER_IMAGE
from ops.device import resolve_device
from ops.features.backbones import build_backbone
from ops.features.image_features import embed_batch
from ops.metrics.ranking import rank_embeddings
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData
from ops.training.trainer import train


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the paper's on an accelerator, small ones for a CPU run."""

    image_dim: int
    text_dim: int
    hidden_dim: int
    embed_dim: int
    batch_images: int
    eval_images: int
    cnn: str
    cnn_size: int
    cnn_batch: int
    cnn_batches: int
    train_images: int


PAPER = Sizes(4096, 6000, 2048, 512, 500, 5000, "resnet152", 224, 64, 8, 2000)
SMALL = Sizes(256, 300, 128, 64, 50, 500, "resnet18", 64, 8, 2, 300)


@dataclass
class Row:
    check: str
    result: str
    passed: bool | None = None  # None: a timing, not a comparison


def _max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())


def _compare(name: str, device_value: torch.Tensor, cpu_value: torch.Tensor, tol: float) -> Row:
    error = _max_relative(device_value, cpu_value)
    return Row(name, f"max rel. error {error:.2e} (tol {tol:.0e})", error <= tol)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work: Callable[[], object], repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    work()
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    _sync(device)
    return (time.perf_counter() - started) / repeats


def _random_split(sizes: Sizes, n_images: int, seed: int) -> ImageSentenceData:
    rng = np.random.default_rng(seed)
    # Captions near their image in a shared random space, so training has something to learn.
    latent = rng.standard_normal((n_images, 32), dtype=np.float32)
    to_image = rng.standard_normal((32, sizes.image_dim), dtype=np.float32)
    to_text = rng.standard_normal((32, sizes.text_dim), dtype=np.float32)
    caption_image = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
    noise = 0.5 * rng.standard_normal((caption_image.size, 32), dtype=np.float32)
    images = latent @ to_image
    texts = (latent[caption_image] + noise) @ to_text
    return ImageSentenceData(images, texts, caption_image)


def check_training(sizes: Sizes, device: torch.device) -> list[Row]:
    """Two epochs of each network through the trainer, on the CPU and on ``device``."""
    train_data = _random_split(sizes, sizes.train_images, seed=0)
    val_data = _random_split(sizes, max(50, sizes.train_images // 5), seed=1)
    rows = []
    amp_modes = (False, True) if device.type == "cuda" else (False,)
    for network in ("embedding", "similarity"):
        for amp in amp_modes:
            config = dict(
                network=network,
                epochs=2,
                hidden_dim=sizes.hidden_dim,
                embed_dim=sizes.embed_dim,
                batch_images=sizes.batch_images,
                dropout=0.0,  # dropout masks come from per-device generators
                lr=1e-3,
                max_train_steps_per_epoch=4,
            )
            results = []
            for where, use_amp in (("cpu", False), (str(device), amp)):
                with tempfile.TemporaryDirectory() as folder:
                    result = train(
                        TrainConfig(device=where, amp=use_amp, **config),
                        train_data,
                        val_data,
                        folder,
                    )
                results.append(result)
            on_cpu, on_device = results
            tol = 5e-2 if amp else 1e-3
            label = f"train {network} ({'bf16 autocast' if amp else 'fp32'})"
            losses = torch.tensor([e.loss for e in on_device.epochs])
            cpu_losses = torch.tensor([e.loss for e in on_cpu.epochs])
            rows.append(_compare(f"{label}: epoch losses", losses, cpu_losses, tol))
            val = torch.tensor([e.val_score or 0.0 for e in on_device.epochs])
            cpu_val = torch.tensor([e.val_score or 0.0 for e in on_cpu.epochs])
            # Recall is a count: a few rank swaps between near-equal scores move it a little.
            rows.append(_compare(f"{label}: val R-sum", val, cpu_val, 0.05 if amp else 0.02))
    return rows


def check_losses(sizes: Sizes, device: torch.device) -> list[Row]:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(
        torch.randn(sizes.batch_images, sizes.embed_dim, generator=generator), dim=1
    )
    texts = torch.nn.functional.normalize(
        torch.randn(2 * sizes.batch_images, sizes.embed_dim, generator=generator), dim=1
    )
    text_image = torch.arange(sizes.batch_images).repeat_interleave(2)
    phrases = texts[: sizes.batch_images // 2]
    positive = torch.rand(phrases.shape[0], images.shape[0], generator=generator) < 0.05
    negative = ~positive & (torch.rand(positive.shape, generator=generator) < 0.8)
    scores = torch.randn(4 * sizes.batch_images, generator=generator)
    labels = torch.where(torch.rand(scores.shape, generator=generator) < 0.3, 1.0, -1.0)

    def losses(where: torch.device) -> list[torch.Tensor]:
        ranking, _ = embedding_loss(images.to(where), texts.to(where), text_image.to(where))
        regions, _ = region_phrase_embedding_loss(
            images.to(where), phrases.to(where), positive.to(where), negative.to(where)
        )
        logistic = logistic_loss(scores.to(where), labels.to(where))
        return [ranking, regions, logistic]

    names = ("image–sentence ranking", "phrase–region ranking", "logistic")
    cpu = losses(torch.device("cpu"))
    return [
        _compare(f"loss: {name}", on_device, on_cpu, 1e-5)
        for name, on_device, on_cpu in zip(names, losses(device), cpu, strict=True)
    ]


def _eval_embeddings(n_images: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=generator), dim=1)
    caption_image = np.repeat(np.arange(n_images), CAPTIONS_PER_IMAGE)
    noise = 0.9 * torch.randn(caption_image.size, dim, generator=generator)
    texts = torch.nn.functional.normalize(images[torch.from_numpy(caption_image)] + noise, dim=1)
    return images, texts, caption_image


def check_evaluator(sizes: Sizes, device: torch.device) -> list[Row]:
    images, texts, caption_image = _eval_embeddings(min(sizes.eval_images, 1000), sizes.embed_dim)
    cpu = rank_embeddings(images, texts, caption_image, device="cpu")
    on_device = rank_embeddings(images, texts, caption_image, device=device)
    rows = []
    for direction in ("i2t", "t2i"):
        expected, got = getattr(cpu, direction), getattr(on_device, direction)
        differ = int(np.sum(expected != got))
        rows.append(
            Row(
                f"evaluator: {direction} ranks",
                f"{differ} of {expected.size} differ (tol 0.1%)",
                differ <= expected.size // 1000,
            )
        )
    return rows


def check_cnn(sizes: Sizes, device: torch.device) -> list[Row]:
    backbone = build_backbone(sizes.cnn, "none", sizes.cnn_size)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(4, 3, sizes.cnn_size, sizes.cnn_size, generator=generator)
    backbone.modules_to(torch.device("cpu"), channels_last=True)
    cpu = embed_batch(backbone, pixels, torch.device("cpu"), amp=False)
    backbone.modules_to(device, channels_last=True)
    fp32 = embed_batch(backbone, pixels, device, amp=False)
    rows = [_compare(f"CNN features {sizes.cnn} (fp32)", fp32, cpu, 1e-3)]
    if device.type == "cuda":
        amp = embed_batch(backbone, pixels, device, amp=True)
        cosine = torch.nn.functional.cosine_similarity(amp, cpu, dim=1).min().item()
        rows.append(
            Row(
                f"CNN features {sizes.cnn} (bf16 autocast)",
                f"min cosine to CPU {cosine:.4f} (tol 0.99)",
                cosine >= 0.99,
            )
        )
    return rows


def time_training_step(sizes: Sizes, device: torch.device) -> Row:
    from models.embedding_net import EmbeddingNet
    from ops.device import autocast_context

    torch.manual_seed(0)
    model = EmbeddingNet(sizes.image_dim, sizes.text_dim, sizes.hidden_dim, sizes.embed_dim)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(sizes.batch_images, sizes.image_dim, device=device)
    texts = torch.randn(2 * sizes.batch_images, sizes.text_dim, device=device)
    text_image = torch.arange(sizes.batch_images, device=device).repeat_interleave(2)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, True):
            image_emb, text_emb = model(images, texts)
        loss, _ = embedding_loss(image_emb.float(), text_emb.float(), text_image)
        loss.backward()
        optimizer.step()

    seconds = _timed(device, step, repeats=20 if device.type == "cuda" else 3)
    shape = f"{sizes.image_dim}/{sizes.text_dim} → {sizes.hidden_dim} → {sizes.embed_dim}"
    return Row(
        f"embedding step, {sizes.batch_images} images × 2 sentences, {shape}",
        f"{seconds * 1000:.1f} ms/step ({1 / seconds:.1f} steps/s)",
    )


def time_evaluation(sizes: Sizes, device: torch.device) -> Row:
    images, texts, caption_image = _eval_embeddings(sizes.eval_images, sizes.embed_dim)
    images, texts = images.to(device), texts.to(device)
    seconds = _timed(device, lambda: rank_embeddings(images, texts, caption_image), repeats=1)
    return Row(
        f"evaluation, {sizes.eval_images:,} images × {caption_image.size:,} captions, both ways",
        f"{seconds:.2f} s",
    )


def time_cnn(sizes: Sizes, device: torch.device) -> Row:
    backbone = build_backbone(sizes.cnn, "none", sizes.cnn_size)
    backbone.modules_to(device, channels_last=True)
    pixels = torch.randn(sizes.cnn_batch, 3, sizes.cnn_size, sizes.cnn_size)
    if device.type == "cuda":
        pixels = pixels.pin_memory()

    def batches() -> None:
        for _ in range(sizes.cnn_batches):
            embed_batch(backbone, pixels, device)

    seconds = _timed(device, batches, repeats=1)
    rate = sizes.cnn_batch * sizes.cnn_batches / seconds
    return Row(f"CNN features {sizes.cnn} at {sizes.cnn_size} px", f"{rate:.0f} images/s")


def run_checks(device: torch.device, sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for check in (check_losses, check_evaluator, check_cnn, check_training):
        rows.extend(check(sizes, device))
    for timing in (time_training_step, time_evaluation, time_cnn):
        rows.append(timing(sizes, device))
    return rows


def format_rows(rows: list[Row], device: torch.device) -> str:
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    width = max(len(row.check) for row in rows)
    lines = [f"device: {name}, torch {torch.__version__}", ""]
    for row in rows:
        verdict = "" if row.passed is None else ("ok   " if row.passed else "FAIL ")
        lines.append(f"{verdict or 'time '} {row.check:<{width}}  {row.result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--small", action="store_true", help="small sizes on any device")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    sizes = SMALL if args.small or device.type != "cuda" else PAPER
    rows = run_checks(device, sizes)
    print(format_rows(rows, device))
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
