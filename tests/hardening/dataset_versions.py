"""Small, recognisable versions of one dataset's tables, and what the SQL views show of them.

Version ``v`` has ``4 + 4 * v`` images with ``v + 1`` captions each, one phrase per image and
``v`` rejects; every id starts with ``v<v>-``, so a view that mixes versions shows it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ops.data.tables import DatasetTables
from ops.storage.sql import run_query

DATASET = "demo"
# The id column of each dataset table that carries the version tag.
TAGGED = {"images": "image_id", "captions": "image_id", "phrases": "image_id", "rejects": "item_id"}


def dataset_version(version: int) -> DatasetTables:
    tag = f"v{version}"
    images = pd.DataFrame(
        {
            "dataset": DATASET,
            "image_id": [f"{tag}-{i}" for i in range(4 + 4 * version)],
            "split": "train",
            "path": "/nowhere/image.jpg",
            "width": 32,
            "height": 24,
        }
    )
    captions = pd.DataFrame(
        [
            {
                "dataset": DATASET,
                "caption_id": f"{image_id}#{k}",
                "image_id": image_id,
                "split": "train",
                "caption_index": k,
                "text": f"caption {k} of {image_id}",
            }
            for image_id in images["image_id"]
            for k in range(version + 1)
        ]
    )
    phrases = pd.DataFrame(
        {
            "dataset": DATASET,
            "phrase_id": captions["caption_id"][:: version + 1] + ":0",
            "caption_id": captions["caption_id"][:: version + 1],
            "image_id": images["image_id"].to_numpy(),
            "split": "train",
            "text": "a shape",
            "phrase_type": "other",
            "all_types": "other",
            "chain_id": "1",
            "first_word_index": 0,
            "gt_x1": 1.0,
            "gt_y1": 2.0,
            "gt_x2": 10.0,
            "gt_y2": 12.0,
            "n_boxes": 1,
        }
    )
    rejects = pd.DataFrame(
        {
            "dataset": DATASET,
            "stage": "images",
            "item_id": [f"{tag}-r{k}" for k in range(version)],
            "path": "/nowhere/bad.jpg",
            "reason": "truncated",
        }
    )
    return DatasetTables(DATASET, images, captions, phrases, rejects).conformed()


def expected_view(version: int) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Rows and version tags each view must show when ``version`` is published."""
    tables = dataset_version(version)
    return {name: (len(getattr(tables, name)), (f"v{version}",)) for name in TAGGED}


def visible_view(root: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Rows and distinct version tags the SQL views show for the dataset."""
    shown = {}
    for name, column in TAGGED.items():
        frame = run_query(
            root,
            f"SELECT count(*) AS n, list(DISTINCT split_part({column}, '-', 1) ORDER BY 1) AS tags "
            f"FROM {name} WHERE dataset = '{DATASET}'",
        )
        shown[name] = (int(frame["n"][0]), tuple(frame["tags"][0]))
    return shown
