"""The parsed-dataset contract: every loader returns a :class:`DatasetTables`.

Conventions shared by every loader and every later step:

- ids are strings (``image_id``, ``caption_id`` = ``"<image_id>#<n>"`` unless the source has
  its own, ``phrase_id`` = ``"<caption_id>:<k>"`` with k the phrase's order in the sentence);
- ``split`` is ``train``, ``val``, ``test`` (or ``restval`` when not folded into train);
- boxes are 0-based pixel coordinates with exclusive right/bottom edges:
  a 1-based inclusive VOC box ``(xmin, ymin, xmax, ymax)`` becomes
  ``(xmin - 1, ymin - 1, xmax, ymax)``; a phrase with several boxes carries their union;
  a phrase without a box (``notvisual``, ``nobndbox``, scene-only) has NaN box columns;
- ``path`` of an image is absolute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

IMAGE_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "image_id": "string",
    "split": "string",
    "path": "string",
    "width": "Int64",
    "height": "Int64",
}
CAPTION_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "caption_id": "string",
    "image_id": "string",
    "split": "string",
    "caption_index": "int64",
    "text": "string",
}
PHRASE_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "phrase_id": "string",
    "caption_id": "string",
    "image_id": "string",
    "split": "string",
    "text": "string",
    "phrase_type": "string",  # first listed type, e.g. "vehicles" for "vehicles/scene"
    "all_types": "string",  # every listed type joined by "/", as in the markup
    "chain_id": "string",
    "first_word_index": "int64",
    "gt_x1": "float64",
    "gt_y1": "float64",
    "gt_x2": "float64",
    "gt_y2": "float64",
    "n_boxes": "int64",
}
REJECT_COLUMNS: dict[str, str] = {
    "dataset": "string",
    "stage": "string",  # which step rejected it: "images", "captions", "phrases", ...
    "item_id": "string",
    "path": "string",
    "reason": "string",
}

SPLITS = ("train", "val", "test")


# Retrieval protocols (1K/5K, R@K) score exactly five captions per image.
CAPTIONS_PER_IMAGE = 5


def beyond_caption_limit(limit: int) -> str:
    """The reject reason of a caption dropped because its image already has ``limit``
    captions: retrieval protocols (1K/5K, R@K) count exactly five captions per image."""
    return f"beyond the first {limit} captions of its image"


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def conform(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Select and order the contract's columns with the contract's dtypes."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    return frame[list(columns)].astype(columns).reset_index(drop=True)


@dataclass
class DatasetTables:
    dataset: str
    images: pd.DataFrame
    captions: pd.DataFrame
    phrases: pd.DataFrame = field(default_factory=lambda: empty_frame(PHRASE_COLUMNS))
    rejects: pd.DataFrame = field(default_factory=lambda: empty_frame(REJECT_COLUMNS))

    def conformed(self) -> DatasetTables:
        return DatasetTables(
            dataset=self.dataset,
            images=conform(self.images, IMAGE_COLUMNS),
            captions=conform(self.captions, CAPTION_COLUMNS),
            phrases=conform(self.phrases, PHRASE_COLUMNS),
            rejects=conform(self.rejects, REJECT_COLUMNS),
        )


class DatasetFormatError(ValueError):
    """A source file that cannot be parsed; names the file and, where known, the line."""

    def __init__(self, path: object, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
