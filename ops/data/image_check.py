"""Validate image files before feature extraction: every image must exist and fully decode.

The pixel count is read from the header before decoding, so an image whose header declares
huge dimensions (a decompression bomb) is rejected without allocating its pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, UnidentifiedImageError

from ops.data.tables import REJECT_COLUMNS, conform

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit, about 0.25 GiB of RGBA

MISSING_FILE = "missing file"
NOT_A_FILE = "not a file"
EMPTY_FILE = "empty file"
UNREADABLE_FILE = "unreadable file"
NOT_AN_IMAGE = "not an image"
CORRUPT_IMAGE = "truncated or corrupt image"
TOO_MANY_PIXELS = "too many pixels"


def check_image(
    path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int] | str:
    """``(width, height)`` of a good image, else the reason it is rejected. Never raises."""
    path = Path(path)
    try:
        if not path.exists():
            return MISSING_FILE
        if not path.is_file():
            # A directory (or device, socket) where an image should be: the path is wrong,
            # not absent, and saying "missing" would send the user looking in vain.
            return NOT_A_FILE
        if path.stat().st_size == 0:
            return EMPTY_FILE
    except OSError:
        return UNREADABLE_FILE
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return TOO_MANY_PIXELS
            image.load()
    except Image.DecompressionBombError:
        # Pillow's own hard limit (twice its warning limit) fired while reading the header.
        return TOO_MANY_PIXELS
    except UnidentifiedImageError:
        return NOT_AN_IMAGE
    except PermissionError:
        return UNREADABLE_FILE
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
        # Pillow reports broken streams with any of these, depending on the codec.
        return CORRUPT_IMAGE
    return width, height


def _column(images: pd.DataFrame, name: str) -> Iterator[Any]:
    return iter(images[name].tolist()) if name in images.columns else iter([pd.NA] * len(images))


def validate_images(
    images: pd.DataFrame, max_pixels: int = DEFAULT_MAX_PIXELS, max_workers: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``images`` (needs ``image_id`` and ``path``) into good images and rejects.

    Good images keep every input column, with ``width``/``height`` set from the decoded file.
    Rejects follow REJECT_COLUMNS with stage ``images``. Decoding runs in threads (Pillow's
    decoders release the GIL); the input order is kept.
    """
    workers = max_workers or min(8, os.cpu_count() or 1)
    paths = images["path"].astype(str).tolist()
    with ThreadPoolExecutor(max_workers=workers) as executor:
        outcomes = list(executor.map(lambda path: check_image(path, max_pixels), paths))

    good = [not isinstance(outcome, str) for outcome in outcomes]
    valid = images.loc[good].reset_index(drop=True)
    sizes = [outcome for outcome in outcomes if not isinstance(outcome, str)]
    valid["width"] = pd.array([size[0] for size in sizes], dtype="Int64")
    valid["height"] = pd.array([size[1] for size in sizes], dtype="Int64")

    rejects: dict[str, list[Any]] = {name: [] for name in REJECT_COLUMNS}
    for dataset, image_id, path, outcome in zip(
        _column(images, "dataset"), images["image_id"].tolist(), paths, outcomes, strict=True
    ):
        if isinstance(outcome, str):
            for name, value in zip(
                REJECT_COLUMNS, (dataset, "images", image_id, path, outcome), strict=True
            ):
                rejects[name].append(value)
    return valid, conform(pd.DataFrame(rejects), REJECT_COLUMNS)
