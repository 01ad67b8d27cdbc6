"""The plots of the report and of the graph and evaluation assets, as PNG bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.patches as patches
import pandas as pd
from PIL import Image

from ops.plotting import figure_png, subplots


def training_curves(epochs: Mapping[str, pd.DataFrame]) -> bytes:
    figure, (left, right) = subplots(1, 2, figsize=(10, 3.2))
    for label, frame in epochs.items():
        left.plot(frame["epoch"], frame["loss"], marker=".", label=label)
        right.plot(frame["epoch"], frame["val_score"], marker=".", label=label)
    left.set(xlabel="epoch", ylabel="training loss", yscale="log")
    right.set(xlabel="epoch", ylabel="validation score (R-sum / accuracy)")
    left.legend(fontsize=7)
    figure.tight_layout()
    return figure_png(figure)


def recall_curves(curves: Mapping[str, Sequence[float]]) -> bytes:
    figure, axis = subplots(figsize=(6, 3.4))
    for label, values in sorted(curves.items()):
        axis.plot(range(1, len(values) + 1), values, label=label)
    axis.set(xlabel="K", ylabel="Recall@K (%)", ylim=(0, 100))
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure_png(figure)


def per_type_bars(per_type: pd.DataFrame) -> bytes:
    pivot = per_type.pivot_table(index="phrase_type", columns="network", values="accuracy")
    figure, axis = subplots(figsize=(7, 3.2))
    pivot.plot.bar(ax=axis)
    axis.set(ylabel="accuracy (%)", xlabel="", ylim=(0, 100))
    figure.tight_layout()
    return figure_png(figure)


def degree_histogram(degree_counts: Mapping[str, Mapping[int, int]]) -> bytes:
    """Per relation of the neighborhood graph: how many sources have each out-degree."""
    relations = sorted(degree_counts)
    figure, axes = subplots(
        1, max(1, len(relations)), figsize=(3.2 * max(1, len(relations)), 2.6), squeeze=False
    )
    for axis, relation in zip(axes[0], relations, strict=False):
        counts = degree_counts[relation]
        axis.bar(list(counts), list(counts.values()), width=0.8, color="#4c72b0")
        axis.set_title(relation, fontsize=9)
        axis.set_xlabel("out-degree")
    axes[0][0].set_ylabel("sources")
    figure.tight_layout()
    return figure_png(figure)


def retrieval_gallery(
    captions: Sequence[str], top_paths: Sequence[Sequence[str]], true_index: Sequence[int | None]
) -> bytes:
    """Per caption (a row), its top-5 images; the true image framed in green."""
    rows, cols = len(captions), max((len(p) for p in top_paths), default=1)
    figure, axes = subplots(rows, cols, figsize=(1.7 * cols, 1.9 * rows), squeeze=False)
    for r, (caption, paths) in enumerate(zip(captions, top_paths, strict=True)):
        for c in range(cols):
            axis = axes[r][c]
            axis.axis("off")
            if c >= len(paths):
                continue
            show_image(axis, paths[c])
            if true_index[r] == c:
                axis.add_patch(
                    patches.Rectangle(
                        (0, 0),
                        1,
                        1,
                        transform=axis.transAxes,
                        fill=False,
                        edgecolor="lime",
                        linewidth=5,
                    )
                )
        axes[r][0].set_title(caption[:70], fontsize=7, loc="left")
    figure.tight_layout()
    return figure_png(figure)


def show_image(axis, path: object) -> None:
    """The image at ``path`` on ``axis``; a dataset of precomputed features has no image
    files (a missing path), so the tile then says so instead."""
    if isinstance(path, str) and path:
        axis.imshow(Image.open(path).convert("RGB"))
        return
    axis.set_facecolor("0.85")
    axis.text(
        0.5,
        0.5,
        "no image file\n(precomputed\nfeatures)",
        ha="center",
        va="center",
        fontsize=7,
        transform=axis.transAxes,
    )


def grounding_gallery(items: Sequence[Mapping]) -> bytes:
    """Per phrase: its image with the true box (green) and the predicted box (red)."""
    figure, axes = subplots(1, len(items), figsize=(2.4 * len(items), 2.8), squeeze=False)
    for axis, item in zip(axes[0], items, strict=True):
        axis.imshow(Image.open(item["path"]).convert("RGB"))
        for box, colour in ((item["true_box"], "lime"), (item["predicted_box"], "red")):
            if box is None:
                continue
            x1, y1, x2, y2 = box
            axis.add_patch(
                patches.Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2
                )
            )
        axis.set_title(item["text"][:30], fontsize=7)
        axis.axis("off")
    figure.tight_layout()
    return figure_png(figure)
