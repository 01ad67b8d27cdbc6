"""Queries into the embedding space, by the code paths that built the training features.

A text goes through :func:`ops.data.tokenize.tokenize` and the text feature file's own fitted
encoder (:mod:`ops.features.text.encoder_store`); an image through
:func:`ops.features.image_features.extract_image_features` with the backbone, weights, size
and crops its dataset's feature file records. The champion's branches then embed them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ops.data.tokenize import tokenize
from ops.features.text.text_features import TextEncoders
from ops.search.errors import SearchError
from ops.storage.parquet_io import read_features, read_schema


def text_problem(text: str, tokens: Sequence[str], known: int) -> str | None:
    """Why a text cannot be a query, or None when it can."""
    if not text.strip():
        return "empty query"
    if not tokens:
        return f"query {text!r} has no words"
    if known == 0:
        return f"no word of the query {text!r} is in the model's vocabulary"
    return None


def encode_texts(
    encoders: TextEncoders, texts: Sequence[str]
) -> tuple[np.ndarray, list[str | None]]:
    """Feature rows of ``texts`` (as the text feature file encodes them), and per text the
    reason it cannot be a query (None when it can)."""
    token_lists = [tokenize(text) for text in texts]
    known = [len(encoders.wv.lookup(tokens)[0]) for tokens in token_lists]
    problems = [
        text_problem(text, tokens, n)
        for text, tokens, n in zip(texts, token_lists, known, strict=True)
    ]
    return encoders.encode(token_lists), problems


def image_extractor(image_features: str | Path) -> dict[str, Any] | None:
    """How a feature file's image vectors were extracted: backbone, weights, input size
    (None when the weights' own preprocessing chose it) and ten-crop, from its metadata.
    None for precomputed features: no extractor here can make more vectors like them."""
    from ops.data.precomp import PRECOMP_VARIANT
    from ops.features.image_features import image_variant

    metadata = {
        key.decode(): value.decode()
        for key, value in (read_schema(image_features).metadata or {}).items()
    }
    if metadata.get("variant") == PRECOMP_VARIANT:
        return None
    missing = [key for key in ("backbone", "weights", "variant") if key not in metadata]
    if missing:
        raise SearchError(f"{image_features}: lacks the extractor settings {missing}")
    ten_crop = metadata.get("ten_crop") == "True"
    stored_size = metadata.get("image_size")
    for size in (None, int(stored_size) if stored_size else None):
        if (
            image_variant(metadata["backbone"], ten_crop, size, metadata["weights"])
            == metadata["variant"]
        ):
            return {
                "backbone": metadata["backbone"],
                "weights": metadata["weights"],
                "image_size": size,
                "ten_crop": ten_crop,
            }
    raise SearchError(f"{image_features}: cannot tell the image size its features used")


def check_image(path: str | Path) -> Path:
    """``path`` as a readable image, else a SearchError naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SearchError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise SearchError(f"{path}: cannot read the image ({error})") from None
    return path


def extract_query_image(
    path: str | Path, extractor: dict[str, Any], device: str = "auto"
) -> np.ndarray:
    """The CNN feature row of one image file, by the extraction that built the dataset's."""
    # Imported here: torchvision takes seconds to load and text queries never need it.
    from ops.features.image_features import extract_image_features
    from ops.features.settings import ImageFeatureSettings

    path = check_image(path)
    with tempfile.TemporaryDirectory(prefix="twobranch-query-") as folder:
        out = Path(folder) / "query.parquet"
        extract_image_features(
            pd.DataFrame({"image_id": ["query"], "split": ["query"], "path": [str(path)]}),
            out,
            ImageFeatureSettings(**extractor, batch_size=1),
            num_workers=0,
            device=device,
        )
        _, matrix = read_features(out)
    return matrix
