"""COCO's official caption release as a Karpathy-style dataset (source ``coco_official``).

The folder holds, anywhere under it (``annotations/`` or the top level), the caption files of
one release year, ``captions_train2014.json`` and ``captions_val2014.json`` (or the 2017
pair), and at its top level the image folders ``train2014/`` and ``val2014/`` that the
records' ``file_name`` is relative to. :func:`acquire_coco_official` converts the pair into
one Karpathy-style file under ``raw/<dataset>/`` so that the ordinary Karpathy loader reads
it; images are listed by image id, captions by annotation id, each caption's annotation id
kept as its ``sentid`` (so "an image's first five captions" means its five lowest ids).

Splits:

- with a Karpathy split file (``dataset_coco.json``), each image takes the split its
  ``cocoid`` has there (``train``, ``val``, ``test`` or ``restval``; the loader folds
  ``restval`` into train unless told otherwise). The ids are the same in the 2014 and 2017
  releases, so either year works. Images the split file does not list are left out and
  listed in the ``rejects`` table (stage ``images``);
- without one, every ``train<year>`` image is ``train``, and the ``val<year>`` images,
  sorted by image id, are cut in two: the first ``n // 2`` ids are ``val``, the rest
  ``test``. Only the ids decide, never the order of the records in the files.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from ops.data.acquire import RawDataset
from ops.data.coco import CocoImage, read_coco_captions
from ops.data.karpathy import KARPATHY_SPLITS, read_json_document
from ops.data.tables import CAPTIONS_PER_IMAGE, DatasetFormatError
from ops.storage.atomic import write_text_atomic
from ops.storage.paths import raw_dir

COCO_YEARS = ("2014", "2017")
CONVERTED_JSON = "dataset_coco_official.json"
_CAPTION_FILE = re.compile(r"captions_(train|val)(\d{4})\.json")
# Image folders hold ~120k files and no annotations: not worth walking.
_IMAGE_FOLDER = re.compile(r"(train|val|test|unlabeled)\d{4}")


def _layout_help(folder: Path, year: str | None = None) -> str:
    """What to put where; without a known year, 2014 stands for either release."""
    shown = year or "2014"
    either = "" if year else " (or the same with 2017)"
    return (
        f"put captions_train{shown}.json and captions_val{shown}.json (from "
        f"annotations_trainval{shown}.zip) in {folder}/annotations/, and the images of "
        f"train{shown}.zip and val{shown}.zip in {folder}/train{shown}/ and "
        f"{folder}/val{shown}/{either}"
    )


def find_caption_files(folder: Path) -> tuple[str, Path, Path]:
    """``(year, train captions, val captions)`` of the one release found under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(folder, f"COCO folder does not exist; {_layout_help(folder)}")
    found: dict[tuple[str, str], list[Path]] = {}
    visited: set[str] = set()
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:  # a symlink loop
            subdirs[:] = []
            continue
        visited.add(real)
        subdirs[:] = sorted(name for name in subdirs if not _IMAGE_FOLDER.fullmatch(name))
        for name in files:
            match = _CAPTION_FILE.fullmatch(name)
            if match:
                found.setdefault((match[1], match[2]), []).append(Path(directory) / name)
    complete = [year for year in COCO_YEARS if ("train", year) in found and ("val", year) in found]
    if not complete:
        present = ", ".join(sorted(str(p) for paths in found.values() for p in paths)) or "none"
        raise DatasetFormatError(
            folder,
            f"no complete pair of COCO caption files (found: {present}); {_layout_help(folder)}",
        )
    if len(complete) > 1:
        raise DatasetFormatError(
            folder,
            f"caption files of both {' and '.join(complete)} found; keep one release's files",
        )
    year = complete[0]
    for subset in ("train", "val"):
        if len(found[(subset, year)]) > 1:
            copies = ", ".join(str(path) for path in sorted(found[(subset, year)]))
            raise DatasetFormatError(
                folder, f"captions_{subset}{year}.json found more than once ({copies}); keep one"
            )
    return year, found[("train", year)][0], found[("val", year)][0]


def read_karpathy_split(path: Path) -> dict[int, str]:
    """COCO image id (``cocoid``) to split, from a Karpathy ``dataset_coco.json``."""
    path = Path(path)
    document = read_json_document(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DatasetFormatError(path, "expected an object with an 'images' list")
    splits: dict[int, str] = {}
    for index, record in enumerate(document["images"]):
        where = f"record {index}"
        if not isinstance(record, dict):
            raise DatasetFormatError(path, f"{where}: expected an object")
        cocoid = record.get("cocoid")
        if not isinstance(cocoid, int) or isinstance(cocoid, bool):
            raise DatasetFormatError(
                path, f"{where}: needs an integer 'cocoid' (is this Karpathy's dataset_coco.json?)"
            )
        split = record.get("split")
        if split not in KARPATHY_SPLITS:
            raise DatasetFormatError(
                path, f"{where}: split {split!r} is not one of {KARPATHY_SPLITS}"
            )
        if cocoid in splits:
            raise DatasetFormatError(path, f"{where}: cocoid {cocoid} is listed twice")
        splits[cocoid] = split
    return splits


def default_splits(train_ids: list[int], val_ids: list[int]) -> dict[int, str]:
    """The split without a Karpathy file: train ids are train; the sorted val ids' first
    ``n // 2`` are val and the rest test (module docstring)."""
    splits = dict.fromkeys(train_ids, "train")
    ordered = sorted(val_ids)
    half = len(ordered) // 2
    splits.update(dict.fromkeys(ordered[:half], "val"))
    splits.update(dict.fromkeys(ordered[half:], "test"))
    return splits


def _record(image: CocoImage, image_folder: str, split: str, imgid: int) -> dict[str, Any]:
    sentences = [
        {"raw": caption, "imgid": imgid, "sentid": annotation_id}
        for annotation_id, caption in image.captions
    ]
    return {
        "filepath": image_folder,
        "filename": str(image.file_name),
        "cocoid": image.image_id,
        "imgid": imgid,
        "split": split,
        "sentids": [sentence["sentid"] for sentence in sentences],
        "sentences": sentences,
    }


def acquire_coco_official(
    folder: Path, root: Path, dataset: str, karpathy_split: Path | None = None
) -> RawDataset:
    """Convert the COCO release in ``folder`` into ``raw/<dataset>/dataset_coco_official.json``.

    Splits come from ``karpathy_split`` (a Karpathy ``dataset_coco.json``) when given, images
    it does not list being left out and counted in ``rejects``; otherwise train images are
    train and the val images, sorted by image id, are split into halves: the first ``n // 2``
    ids val, the rest test. Raises DatasetFormatError naming the folder and what to put where
    when the caption files or image folders are missing.
    """
    started = time.perf_counter()
    folder = Path(folder).absolute()
    year, train_json, val_json = find_caption_files(folder)
    for subset in ("train", "val"):
        if not (folder / f"{subset}{year}").is_dir():
            raise DatasetFormatError(
                folder, f"image folder {subset}{year}/ is missing; {_layout_help(folder, year)}"
            )
    subsets = [
        (f"train{year}", train_json, read_coco_captions(train_json)),
        (f"val{year}", val_json, read_coco_captions(val_json)),
    ]
    if karpathy_split is not None:
        splits = read_karpathy_split(Path(karpathy_split))
    else:
        splits = default_splits(
            [image.image_id for image in subsets[0][2]], [image.image_id for image in subsets[1][2]]
        )

    records: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    for image_folder, json_path, images in subsets:
        for image in sorted(images, key=lambda image: image.image_id):
            split = splits.get(image.image_id)
            if split is None:  # only with a split file: default_splits covers every image
                reason = f"not listed in the Karpathy split file {Path(str(karpathy_split)).name}"
                excluded.append(
                    {"image_id": str(image.image_id), "path": str(json_path), "reason": reason}
                )
                continue
            records.append(_record(image, image_folder, split, len(records)))

    out_json = raw_dir(Path(root).absolute(), dataset) / CONVERTED_JSON
    document = {"dataset": "coco", "images": records, "excluded_images": excluded}
    write_text_atomic(out_json, json.dumps(document, ensure_ascii=False))
    return RawDataset(
        dataset=dataset,
        karpathy_json=str(out_json),
        image_root=str(folder),
        min_captions_per_image=CAPTIONS_PER_IMAGE,
        seconds=time.perf_counter() - started,
    )
