"""Retrieval evaluation speed on the 5K protocol: counting evaluator vs the bare score product
and vs a per-query argsort evaluator in the style of the field's public code.

    python benchmarks/bench_retrieval_eval.py [--images 5000] [--dim 512] [--chunk N]
        [--threads T] [--device auto]

Prints one table: wall and CPU seconds, their ratio to the product, peak memory above the
inputs, and whether the ranks agree with the per-query evaluator on its subset of queries.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from peak_rss import PeakRss

from ops.data.tables import CAPTIONS_PER_IMAGE
from ops.device import resolve_device
from ops.metrics.ranking import rank_embeddings
from ops.metrics.score_sources import default_chunk


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device) -> tuple[tuple[float, float], object]:
    """(wall seconds, process CPU seconds) and the result. On a busy shared machine the CPU
    time is the steadier of the two."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    synchronize(device)
    return (time.perf_counter() - start, time.process_time() - cpu_start), result


def product_only(images: torch.Tensor, texts: torch.Tensor, chunk: int) -> float:
    checksum = 0.0
    for start in range(0, len(texts), chunk):
        block = images @ texts[start : start + chunk].T
        checksum += float(block[0, 0])
    return checksum


def field_style_i2t(
    images: np.ndarray, texts: np.ndarray, per_image: int, queries: np.ndarray
) -> np.ndarray:
    """Per image: one product row, a full argsort, a search for the image's captions."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    for row, index in enumerate(queries):
        scores = np.dot(images[index : index + 1], texts.T).flatten()
        order = np.argsort(scores)[::-1]
        best = len(texts)
        for caption in range(per_image * index, per_image * index + per_image):
            best = min(best, int(np.where(order == caption)[0][0]))
        ranks[row] = best + 1
    return ranks


def field_style_t2i(
    images: np.ndarray, texts: np.ndarray, per_image: int, queries: np.ndarray
) -> np.ndarray:
    """Per caption: one product row against all images, a full argsort, a search."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    for row, caption in enumerate(queries):
        scores = np.dot(texts[caption : caption + 1], images.T).flatten()
        order = np.argsort(scores)[::-1]
        ranks[row] = int(np.where(order == caption // per_image)[0][0]) + 1
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions-per-image", type=int, default=CAPTIONS_PER_IMAGE)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--reference-queries", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for timed runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    per_image = args.captions_per_image
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(
        torch.randn(args.images, args.dim, generator=generator), dim=1
    )
    texts = torch.nn.functional.normalize(
        torch.randn(args.images * per_image, args.dim, generator=generator), dim=1
    )
    caption_image = np.repeat(np.arange(args.images), per_image)
    images_np, texts_np = images.numpy(), texts.numpy()
    images, texts = images.to(device), texts.to(device)
    chunk = args.chunk or default_chunk(args.images, device)

    # Warm-up: library initialisation and first-touch allocations are not what is measured.
    product_only(images, texts[: 4 * chunk], chunk)
    rank_embeddings(images[:50], texts[: 50 * per_image], caption_image[: 50 * per_image], chunk)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as memory:
        seconds, ranks = timed(lambda: rank_embeddings(images, texts, caption_image, chunk), device)
    evaluation_times = [seconds]
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    # Alternate the two so that a busy shared machine slows both alike.
    product_times = []
    for repeat in range(args.repeats):
        product_times.append(timed(lambda: product_only(images, texts, chunk), device)[0])
        if repeat + 1 < args.repeats:
            evaluation_times.append(
                timed(lambda: rank_embeddings(images, texts, caption_image, chunk), device)[0]
            )

    n_reference = min(args.reference_queries, args.images)
    queries = np.arange(n_reference)
    i2t_seconds, i2t_reference = timed(
        lambda: field_style_i2t(images_np, texts_np, per_image, queries), device
    )
    t2i_seconds, t2i_reference = timed(
        lambda: field_style_t2i(images_np, texts_np, per_image, queries), device
    )
    i2t_differ = np.flatnonzero(ranks.i2t[:n_reference] != i2t_reference)
    t2i_differ = np.flatnonzero(ranks.t2i[:n_reference] != t2i_reference)
    # Where the two disagree, float64 scores show which float32 ordering was the true one.
    images64, texts64 = images_np.astype(np.float64), texts_np.astype(np.float64)
    ours_right = int(
        (field_style_i2t(images64, texts64, per_image, i2t_differ) == ranks.i2t[i2t_differ]).sum()
    ) + int(
        (field_style_t2i(images64, texts64, per_image, t2i_differ) == ranks.t2i[t2i_differ]).sum()
    )
    differ_note = (
        f"ranks differ on {len(i2t_differ)} i2t, {len(t2i_differ)} t2i queries; "
        f"float64 sides with ours on {ours_right}"
    )

    product = tuple(min(times) for times in zip(*product_times, strict=True))
    evaluation = tuple(min(times) for times in zip(*evaluation_times, strict=True))
    field = (
        i2t_seconds[0] * args.images / n_reference
        + t2i_seconds[0] * len(caption_image) / n_reference,
        i2t_seconds[1] * args.images / n_reference
        + t2i_seconds[1] * len(caption_image) / n_reference,
    )
    block_mib = args.images * chunk * 4 / 2**20
    full_mib = args.images * len(caption_image) * 4 / 2**20
    print(
        f"5K protocol: {args.images} images x {len(caption_image)} captions, d={args.dim}, "
        f"device={device}, torch threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(
        f"chunk = {chunk} caption columns per block ({block_mib:.1f} MiB of float32 scores; "
        f"the full matrix would be {full_mib:.0f} MiB)"
    )
    print()
    rows = [
        ("score product alone (chunked)", product, "-"),
        ("counting evaluator, both directions", evaluation, "-"),
        (
            f"per-query argsort, extrapolated from {n_reference}+{n_reference} queries",
            field,
            differ_note,
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    header = f"{'what':<{width}}  {'wall s':>8}  {'x product':>9}  {'CPU s':>8}  {'x product':>9}"
    print(header + "  note")
    for name, (wall, cpu), note in rows:
        print(
            f"{name:<{width}}  {wall:8.2f}  {wall / product[0]:9.2f}  {cpu:8.2f}  "
            f"{cpu / product[1]:9.2f}  {note}"
        )
    print()
    print(
        f"evaluator speed-up over the per-query evaluator: {field[0] / evaluation[0]:.1f}x wall, "
        f"{field[1] / evaluation[1]:.1f}x CPU"
    )
    print(
        f"peak RSS during evaluation: {memory.peak - memory.start:.1f} MiB above the "
        f"{memory.start:.0f} MiB held before it (inputs, libraries)"
    )
    if cuda_peak is not None:
        print(f"peak CUDA memory allocated: {cuda_peak:.1f} MiB")
    recalls = {
        direction: [float(100 * np.mean(values <= k)) for k in (1, 5, 10)]
        for direction, values in (("i2t", ranks.i2t), ("t2i", ranks.t2i))
    }
    print(f"sanity (chance level): R@1/5/10 i2t {recalls['i2t']}, t2i {recalls['t2i']}")


if __name__ == "__main__":
    main()
