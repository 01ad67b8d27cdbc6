"""COCO's official caption files (``captions_train2017.json`` and friends).

:func:`read_coco_captions` is the one parser of the official schema;
:mod:`ops.data.coco_official` converts a train/val pair into a Karpathy-style file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ops.data.karpathy import read_json_document, relative_image_path
from ops.data.tables import DatasetFormatError


@dataclass(frozen=True)
class CocoImage:
    """One ``images`` record with its captions as ``(annotation id, caption)``, sorted by
    annotation id; captions are as written (blank ones included)."""

    image_id: int
    file_name: PurePosixPath
    width: int
    height: int
    captions: list[tuple[int, str]]


def _field(source: Path, record: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(record, dict):
        raise DatasetFormatError(source, f"{where}: expected an object")
    if key not in record:
        raise DatasetFormatError(source, f"{where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetFormatError(
            source, f"{where}: {key!r} should be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def read_coco_captions(json_path: Path) -> list[CocoImage]:
    """The images of one official caption file, in file order, each with its captions.

    Structural problems (missing keys, wrong types, duplicate ids, a caption of an unknown
    image, a file name escaping the image folder) are DatasetFormatError naming the record.
    """
    json_path = Path(json_path)
    document = read_json_document(json_path)
    if not isinstance(document, dict):
        raise DatasetFormatError(json_path, "expected a JSON object")
    image_records = _field(json_path, document, "images", list, "top level")
    annotation_records = _field(json_path, document, "annotations", list, "top level")

    headers: dict[int, tuple[PurePosixPath, int, int]] = {}
    for index, record in enumerate(image_records):
        where = f"images[{index}]"
        image_id = _field(json_path, record, "id", int, where)
        file_name = _field(json_path, record, "file_name", str, where)
        width = _field(json_path, record, "width", int, where)
        height = _field(json_path, record, "height", int, where)
        if image_id in headers:
            raise DatasetFormatError(json_path, f"{where}: duplicate image id {image_id}")
        headers[image_id] = (relative_image_path(json_path, where, file_name), width, height)

    by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    seen_annotations: set[int] = set()
    for index, record in enumerate(annotation_records):
        where = f"annotations[{index}]"
        annotation_id = _field(json_path, record, "id", int, where)
        image_id = _field(json_path, record, "image_id", int, where)
        caption = _field(json_path, record, "caption", str, where)
        if annotation_id in seen_annotations:
            raise DatasetFormatError(json_path, f"{where}: duplicate annotation id {annotation_id}")
        seen_annotations.add(annotation_id)
        if image_id not in headers:
            raise DatasetFormatError(json_path, f"{where}: unknown image_id {image_id}")
        by_image[image_id].append((annotation_id, caption))

    return [
        CocoImage(image_id, file_name, width, height, sorted(by_image.get(image_id, [])))
        for image_id, (file_name, width, height) in headers.items()
    ]
