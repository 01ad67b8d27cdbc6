"""Karpathy-style split files (``dataset_flickr30k.json``, ``dataset_coco.json``, custom sets).

Shape: ``{"images": [{"filename", "split", "sentences": [{"raw", ...}], "filepath"?,
"cocoid"?, ...}]}``. COCO records carry ``cocoid`` (the image id) and ``filepath`` (the folder
under the image root); Flickr30K records are identified by their file name without suffix.
A sentence's ``imgid``, where given, must match its image record's ``imgid``.

Files this project converts from another format (see :mod:`ops.data.coco_official`) may
carry a top-level ``excluded_images`` list, ``[{"image_id", "path", "reason"}]``: images the
conversion left out, which the loader lists in ``rejects`` (stage ``images``) so they are
counted with everything else that was dropped.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ops.data.tables import (
    CAPTION_COLUMNS,
    CAPTIONS_PER_IMAGE,
    IMAGE_COLUMNS,
    REJECT_COLUMNS,
    SPLITS,
    DatasetFormatError,
    DatasetTables,
    beyond_caption_limit,
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


def caption_id_of(image_id: str, position: int) -> str:
    """A caption's id: its image's id and its position in the image's sentence list."""
    return f"{image_id}#{position}"


def sentence_ids(json_path: Path, split: str | None = None) -> dict[str, Any]:
    """``{caption id: sentid}`` of the captions (of ``split``, or all) of a Karpathy file that
    gives sentids; COCO's files keep the caption annotation id there."""
    json_path = Path(json_path)
    document = read_json_document(json_path)
    found: dict[str, Any] = {}
    for index, record in enumerate(document.get("images", [])):
        if split is not None and record.get("split") != split:
            continue
        image_id = _image_id(json_path, record, record.get("filename", ""), f"record {index}")
        for position, sentence in enumerate(record.get("sentences", [])):
            if isinstance(sentence, dict) and "sentid" in sentence:
                found[caption_id_of(image_id, position)] = sentence["sentid"]
    return found


def _excluded_images(source: Path, document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(image_id, path, reason)`` of each image a conversion left out (module docstring)."""
    records = document.get("excluded_images", [])
    if not isinstance(records, list):
        raise DatasetFormatError(source, "'excluded_images' should be a list")
    excluded = []
    for index, record in enumerate(records):
        where = f"excluded_images[{index}]"
        if not isinstance(record, dict):
            raise DatasetFormatError(source, f"{where}: expected an object")
        excluded.append(
            tuple(
                _require(source, record, key, str, where) for key in ("image_id", "path", "reason")
            )
        )
    return excluded


def _first_captions(sentences: list[tuple[int, Any]], limit: int) -> set[int]:
    """Positions of the ``limit`` first captions of an image: by ``sentid`` when every one has
    an integer sentid (COCO conversions keep the annotation id there), else by position."""
    if all(isinstance(sentid, int) and not isinstance(sentid, bool) for _, sentid in sentences):
        ordered = sorted(sentences, key=lambda item: (item[1], item[0]))
    else:
        ordered = sentences
    return {position for position, _ in ordered[:limit]}


def load_karpathy(
    json_path: Path,
    image_root: Path,
    dataset: str,
    restval_to_train: bool = True,
    max_captions_per_image: int | None = CAPTIONS_PER_IMAGE,
) -> DatasetTables:
    """Images and captions of a Karpathy-style split file.

    Empty captions are dropped and listed in ``rejects``; an image left without captions is
    dropped too. Of the remaining captions an image keeps the first ``max_captions_per_image``
    (by ``sentid``, see :func:`_first_captions`; None keeps all), the rest are listed in
    ``rejects``; kept captions stay in file order. Widths and heights stay unknown until the
    images are validated.
    """
    if max_captions_per_image is not None and max_captions_per_image < 1:
        raise ValueError("max_captions_per_image must be at least 1 (or None)")
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

    def reject(item_id: str, reason: str, stage: str = "captions", path: str = "") -> None:
        for name, value in zip(
            REJECT_COLUMNS,
            (dataset, stage, item_id, path or str(json_path), reason),
            strict=True,
        ):
            rejects[name].append(value)

    for image_id, path, reason in _excluded_images(json_path, document):
        reject(image_id, reason, stage="images", path=path)

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

        record_imgid = record.get("imgid")
        non_empty: list[tuple[int, str, Any]] = []
        for k, sentence in enumerate(sentences):
            sentence_where = f"{where} sentence {k}"
            if not isinstance(sentence, dict):
                raise DatasetFormatError(json_path, f"{sentence_where}: expected an object")
            raw = _require(json_path, sentence, "raw", str, sentence_where)
            caption_id = caption_id_of(image_id, k)
            if record_imgid is not None and "imgid" in sentence:
                if sentence["imgid"] != record_imgid:
                    raise DatasetFormatError(
                        json_path,
                        f"{sentence_where}: imgid {sentence['imgid']!r} contradicts its image "
                        f"record's imgid {record_imgid!r}",
                    )
            sentid = sentence.get("sentid")
            if "sentid" in sentence:
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
            non_empty.append((k, text, sentid))
        if not non_empty:
            reject(image_id, "image has no captions")
            continue
        kept = {k for k, _, _ in non_empty}
        if max_captions_per_image is not None and len(non_empty) > max_captions_per_image:
            kept = _first_captions(
                [(k, sentid) for k, _, sentid in non_empty], max_captions_per_image
            )
            for k, _, _ in non_empty:
                if k not in kept:
                    reject(caption_id_of(image_id, k), beyond_caption_limit(max_captions_per_image))
        for k, text, _ in non_empty:
            if k not in kept:
                continue
            caption_id = caption_id_of(image_id, k)
            # k keeps the position in the source so it still lines up with per-image files
            # (e.g. Flickr30K Entities sentences) after a caption is dropped.
            for name, value in zip(
                CAPTION_COLUMNS, (dataset, caption_id, image_id, split, k, text), strict=True
            ):
                captions[name].append(value)
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
