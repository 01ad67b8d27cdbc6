"""Small image–sentence feature files, in the format the feature assets write, built from
the synthetic problems of ``tests/training_problems.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from ops.graph.build import GraphSettings, graph_edges
from ops.graph.store import write_graph
from ops.handoffs import NeighborhoodGraphFile
from ops.storage.parquet_io import FeatureWriter, read_features
from tests.training_problems import make_image_sentence

SPLITS = {"train": (120, 0), "val": (40, 1), "test": (40, 2)}


def write_image_sentence_features(
    folder: Path,
    splits: dict[str, tuple[int, int]] = SPLITS,
    image_name: Callable[[str, int], str] = lambda split, i: f"{split}-{i}",
    caption_name: Callable[[str, int], str] = lambda split, j: f"{split}-c{j}",
) -> dict[str, str]:
    """``{"image_features": path, "text_features": path}`` with ``splits`` as
    ``{split: (n_images, seed)}``; five captions per image, caption j of a split belonging
    to its image j // 5. Ids are ``image_name(split, i)`` and ``caption_name(split, j)``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "image_features": folder / "image_toy.parquet",
        "text_features": folder / "text_toy.parquet",
    }
    data = {split: make_image_sentence(n, seed) for split, (n, seed) in splits.items()}
    image_dim = next(iter(data.values())).image_dim
    text_dim = next(iter(data.values())).text_dim
    string = pa.string()
    with (
        FeatureWriter(
            paths["image_features"], {"image_id": string, "split": string}, image_dim
        ) as images,
        FeatureWriter(
            paths["text_features"],
            {"caption_id": string, "image_id": string, "split": string},
            text_dim,
        ) as texts,
    ):
        for split, part in data.items():
            image_ids = np.array(
                [image_name(split, i) for i in range(part.image_features.shape[0])]
            )
            images.write(
                {"image_id": image_ids, "split": [split] * len(image_ids)}, part.image_features
            )
            captions = [caption_name(split, j) for j in range(part.caption_image.size)]
            texts.write(
                {
                    "caption_id": captions,
                    "image_id": image_ids[part.caption_image],
                    "split": [split] * len(captions),
                },
                part.text_features,
            )
    return {name: str(path) for name, path in paths.items()}


def write_graph_for(
    root: Path, inputs: dict[str, str], settings: GraphSettings | None = None, dataset: str = "toy"
) -> NeighborhoodGraphFile:
    """The neighborhood graph of the feature files ``inputs`` (captions from the text
    features' ids), written under ``root``; returns the graph asset's hand-off."""
    settings = settings or GraphSettings()
    texts = read_features(inputs["text_features"])
    images = read_features(inputs["image_features"])
    blocks = graph_edges(settings, texts[0], image_features=images, text_features=texts)
    return write_graph(root, dataset, settings, blocks).manifest(dataset)
