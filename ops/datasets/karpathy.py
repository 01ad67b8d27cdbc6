"""Karpathy-style split files (``dataset_flickr30k.json``, ``dataset_coco.json``, custom sets).

Shape: ``{"images": [{"filename", "split", "sentences": [{"raw", ...}], "filepath"?,
"cocoid"?, ...}]}``. COCO records carry ``cocoid`` (the image id) and ``filepath`` (the folder
under the image root); Flickr30K records are identified by their file name without suffix.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ops.tables import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    REJECT_COLUMNS,
    SPLITS,
    DatasetFormatError,
    DatasetTables,
    conform,
)

KARPATHY_SPLITS = (*SPLITS, "restval")


def read_json_document(path: Path) -> Any:
    """Parse a JSON file; syntax or encoding errors become DatasetFormatError with the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DatasetFormatError(path, f"not valid UTF-8: {error.reason}", line=line) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        message = f"invalid JSON: {error.msg} (column {error.colno})"
        raise DatasetFormatError(path, message, line=error.lineno) from None


def relative_image_path(source: Path, where: str, *parts: str) -> PurePosixPath:
    """Join path parts from an annotation file, refusing anything that escapes the root."""
    joined = PurePosixPath(*[part.replace("\\", "/") for part in parts if part])
    if joined.is_absolute() or ".." in joined.parts or str(joined) in ("", "."):
        raise DatasetFormatError(source, f"{where}: image path {str(joined)!r} is not relative")
    return joined


def _require(source: Path, record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in record:
        raise DatasetFormatError(source, f"{where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetFormatError(
            source, f"{where}: {key!r} should be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _image_id(source: Path, record: dict[str, Any], filename: str, where: str) -> str:
    if "cocoid" in record:
        cocoid = record["cocoid"]
        if isinstance(cocoid, bool) or not isinstance(cocoid, int | str) or str(cocoid) == "":
            raise DatasetFormatError(source, f"{where}: 'cocoid' should be an integer id")
        return str(cocoid)
    stem = PurePosixPath(filename).stem
    if not stem:
        raise DatasetFormatError(source, f"{where}: cannot derive an image id from {filename!r}")
    return stem


def load_karpathy(
    json_path: Path, image_root: Path, dataset: str, restval_to_train: bool = True
) -> DatasetTables:
    """Images and captions of a Karpathy-style split file.

    Empty captions are dropped and listed in ``rejects``; an image left without captions is
    dropped too. Widths and heights stay unknown until the images are validated.
    """
    json_path = Path(json_path)
    image_root = Path(image_root).absolute()
    document = read_json_document(json_path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DatasetFormatError(json_path, "expected an object with an 'images' list")

    images: dict[str, list[Any]] = {name: [] for name in IMAGE_COLUMNS}
    captions: dict[str, list[Any]] = {name: [] for name in CAPTION_COLUMNS}
    rejects: dict[str, list[Any]] = {name: [] for name in REJECT_COLUMNS}
    seen_images: dict[str, int] = {}
    seen_sentids: dict[Any, str] = {}

    def reject(item_id: str, reason: str) -> None:
        for name, value in zip(
            REJECT_COLUMNS, (dataset, "captions", item_id, str(json_path), reason), strict=True
        ):
            rejects[name].append(value)

    for index, record in enumerate(document["images"]):
        where = f"record {index}"
        if not isinstance(record, dict):
            raise DatasetFormatError(json_path, f"{where}: expected an object")
        filename = _require(json_path, record, "filename", str, where)
        where = f"record {index} ({filename!r})"
        split = _require(json_path, record, "split", str, where)
        sentences = _require(json_path, record, "sentences", list, where)
        filepath = record.get("filepath") or ""
        if not isinstance(filepath, str):
            raise DatasetFormatError(json_path, f"{where}: 'filepath' should be str")
        if split not in KARPATHY_SPLITS:
            raise DatasetFormatError(
                json_path, f"{where}: unknown split {split!r}; expected one of {KARPATHY_SPLITS}"
            )
        if split == "restval" and restval_to_train:
            split = "train"
        image_id = _image_id(json_path, record, filename, where)
        if image_id in seen_images:
            first = seen_images[image_id]
            raise DatasetFormatError(
                json_path, f"{where}: duplicate image id {image_id!r} (first in record {first})"
            )
        seen_images[image_id] = index
        relative = relative_image_path(json_path, where, filepath, filename)

        kept = 0
        for k, sentence in enumerate(sentences):
            sentence_where = f"{where} sentence {k}"
            if not isinstance(sentence, dict):
                raise DatasetFormatError(json_path, f"{sentence_where}: expected an object")
            raw = _require(json_path, sentence, "raw", str, sentence_where)
            caption_id = f"{image_id}#{k}"
            if "sentid" in sentence:
                sentid = sentence["sentid"]
                if sentid in seen_sentids:
                    raise DatasetFormatError(
                        json_path,
                        f"{sentence_where}: duplicate caption sentid {sentid!r} "
                        f"(already used by {seen_sentids[sentid]})",
                    )
                seen_sentids[sentid] = caption_id
            text = raw.strip()
            if not text:
                reject(caption_id, "empty caption")
                continue
            # k keeps the position in the source so it still lines up with per-image files
            # (e.g. Flickr30K Entities sentences) after an empty caption is dropped.
            for name, value in zip(
                CAPTION_COLUMNS, (dataset, caption_id, image_id, split, k, text), strict=True
            ):
                captions[name].append(value)
            kept += 1
        if kept == 0:
            reject(image_id, "image has no captions")
            continue
        for name, value in zip(
            IMAGE_COLUMNS,
            (dataset, image_id, split, str(image_root / relative), pd.NA, pd.NA),
            strict=True,
        ):
            images[name].append(value)

    return DatasetTables(
        dataset=dataset,
        images=conform(pd.DataFrame(images), IMAGE_COLUMNS),
        captions=conform(pd.DataFrame(captions), CAPTION_COLUMNS),
        rejects=conform(pd.DataFrame(rejects), REJECT_COLUMNS),
    )
