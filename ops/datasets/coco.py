"""COCO's official caption files (``captions_train2017.json`` and friends)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from ops.datasets.karpathy import KARPATHY_SPLITS, read_json_document, relative_image_path
from ops.tables import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    REJECT_COLUMNS,
    DatasetFormatError,
    DatasetTables,
    conform,
)


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


def load_coco_captions(
    json_path: Path,
    image_root: Path,
    split: str,
    dataset: str,
    max_captions_per_image: int | None = 5,
    min_captions_per_image: int = 5,
) -> DatasetTables:
    """Images and captions of one COCO caption file, all assigned to ``split``.

    Captions are taken in annotation-id order and trimmed to ``max_captions_per_image``
    (None keeps all); images with fewer than ``min_captions_per_image`` non-empty captions are
    skipped and listed in ``rejects``, as are empty captions.
    """
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {KARPATHY_SPLITS}")
    if max_captions_per_image is not None and max_captions_per_image < min_captions_per_image:
        raise ValueError("max_captions_per_image is below min_captions_per_image")
    json_path = Path(json_path)
    image_root = Path(image_root).absolute()
    document = read_json_document(json_path)
    if not isinstance(document, dict):
        raise DatasetFormatError(json_path, "expected a JSON object")
    image_records = _field(json_path, document, "images", list, "top level")
    annotation_records = _field(json_path, document, "annotations", list, "top level")

    image_rows: dict[str, tuple[str, int, int]] = {}
    for index, record in enumerate(image_records):
        where = f"images[{index}]"
        image_id = str(_field(json_path, record, "id", int, where))
        file_name = _field(json_path, record, "file_name", str, where)
        width = _field(json_path, record, "width", int, where)
        height = _field(json_path, record, "height", int, where)
        if image_id in image_rows:
            raise DatasetFormatError(json_path, f"{where}: duplicate image id {image_id}")
        path = str(image_root / relative_image_path(json_path, where, file_name))
        image_rows[image_id] = (path, width, height)

    rejects: dict[str, list[Any]] = {name: [] for name in REJECT_COLUMNS}

    def reject(item_id: str, reason: str) -> None:
        for name, value in zip(
            REJECT_COLUMNS, (dataset, "captions", item_id, str(json_path), reason), strict=True
        ):
            rejects[name].append(value)

    by_image: dict[str, list[tuple[int, str]]] = defaultdict(list)
    seen_annotations: set[int] = set()
    for index, record in enumerate(annotation_records):
        where = f"annotations[{index}]"
        annotation_id = _field(json_path, record, "id", int, where)
        image_id = str(_field(json_path, record, "image_id", int, where))
        caption = _field(json_path, record, "caption", str, where)
        if annotation_id in seen_annotations:
            raise DatasetFormatError(json_path, f"{where}: duplicate annotation id {annotation_id}")
        seen_annotations.add(annotation_id)
        if image_id not in image_rows:
            raise DatasetFormatError(json_path, f"{where}: unknown image_id {image_id}")
        text = caption.strip()
        if not text:
            reject(str(annotation_id), "empty caption")
            continue
        by_image[image_id].append((annotation_id, text))

    images: dict[str, list[Any]] = {name: [] for name in IMAGE_COLUMNS}
    captions: dict[str, list[Any]] = {name: [] for name in CAPTION_COLUMNS}
    for image_id, (path, width, height) in image_rows.items():
        image_captions = sorted(by_image.get(image_id, []))
        if len(image_captions) < min_captions_per_image:
            reject(
                image_id,
                f"image has {len(image_captions)} captions, fewer than {min_captions_per_image}",
            )
            continue
        for name, value in zip(
            IMAGE_COLUMNS, (dataset, image_id, split, path, width, height), strict=True
        ):
            images[name].append(value)
        for index, (annotation_id, text) in enumerate(image_captions[:max_captions_per_image]):
            for name, value in zip(
                CAPTION_COLUMNS,
                (dataset, str(annotation_id), image_id, split, index, text),
                strict=True,
            ):
                captions[name].append(value)

    return DatasetTables(
        dataset=dataset,
        images=conform(pd.DataFrame(images), IMAGE_COLUMNS),
        captions=conform(pd.DataFrame(captions), CAPTION_COLUMNS),
        rejects=conform(pd.DataFrame(rejects), REJECT_COLUMNS),
    )
