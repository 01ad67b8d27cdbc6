"""The authors' own MSCOCO split (``split: paper`` of the ``coco`` source).

The authors published three lists, ``train.txt``, ``val.txt`` and ``test.txt``: one COCO 2014
file name per line (``COCO_val2014_000000391895.jpg``), 113,287 / 9,000 / 1,000 images, the
test list drawing on both train2014 and val2014. They are read from a local folder, or
downloaded from a base URL with a SHA-256 per file, and applied to the Karpathy file of the
``coco`` source (which lists every COCO 2014 image with its captions): each image takes the
split of the list naming it, images no list names are left out and counted in ``rejects``.
The result is one more Karpathy-style file, so the ordinary loader reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ops.data.acquire import RawDataset
from ops.data.downloads import download
from ops.data.karpathy import read_json_document
from ops.data.tables import DatasetFormatError
from ops.storage.atomic import write_text_atomic

PAPER_LISTS = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
PAPER_SPLIT_SIZES = {"train": 113287, "val": 9000, "test": 1000}
PAPER_JSON = "dataset_coco_paper.json"
LISTS_FOLDER = "paper_split"
_FILE_NAME = re.compile(r"COCO_(train|val)2014_\d{12}\.jpg")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def check_list_checksums(sha256: Mapping[str, str] | None) -> dict[str, str]:
    """The SHA-256 of each list file, all three required (lowercase hex)."""
    given = {name: str(value).lower() for name, value in (sha256 or {}).items()}
    missing = [name for name in PAPER_LISTS.values() if name not in given]
    unknown = sorted(set(given) - set(PAPER_LISTS.values()))
    bad = [name for name, value in given.items() if not _SHA256.fullmatch(value)]
    if missing or unknown or bad:
        raise ValueError(
            "a URL for the split lists needs a SHA-256 for each of train.txt, val.txt and "
            f"test.txt (missing: {missing or 'none'}, unknown: {unknown or 'none'}, not 64 hex "
            f"digits: {bad or 'none'})"
        )
    return given


def read_split_list(path: Path) -> list[tuple[int, str]]:
    """``(line number, file name)`` of each entry of one list; blank lines are skipped, a line
    that is not a COCO 2014 file name or repeats one is a DatasetFormatError with its line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DatasetFormatError(path, "split list not found") from None
    except UnicodeDecodeError as error:
        raise DatasetFormatError(path, f"not valid UTF-8: {error.reason}") from None
    entries: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not _FILE_NAME.fullmatch(name):
            raise DatasetFormatError(
                path,
                f"{name[:80]!r} is not a COCO 2014 file name (COCO_val2014_<12 digits>.jpg)",
                line=number,
            )
        if name in seen:
            raise DatasetFormatError(path, f"{name} repeats line {seen[name]}", line=number)
        seen[name] = number
        entries.append((number, name))
    return entries


def paper_splits(lists: Mapping[str, Path], known: set[str]) -> dict[str, str]:
    """File name → split over the three lists; a name outside ``known`` (the COCO images) or
    named by two lists is a DatasetFormatError naming the list file and the line."""
    splits: dict[str, str] = {}
    where: dict[str, str] = {}
    for split, path in lists.items():
        for number, name in read_split_list(path):
            if name not in known:
                raise DatasetFormatError(
                    path, f"{name} is not among the COCO 2014 images with captions", line=number
                )
            if name in splits:
                raise DatasetFormatError(
                    path, f"{name} is already in {where[name]} ({splits[name]})", line=number
                )
            splits[name] = split
            where[name] = f"{Path(path).name} line {number}"
    return splits


def provide_lists(
    location: str, target: Path, sha256: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """The three lists by split: the files of a local folder, or downloaded from the base URL
    ``location`` into ``target`` and checked against ``sha256`` (file name → hex)."""
    if is_url(location):
        checksums = check_list_checksums(sha256)
        base = location.rstrip("/")
        return {
            split: download(f"{base}/{name}", Path(target) / name, sha256=checksums[name])
            for split, name in PAPER_LISTS.items()
        }
    folder = Path(location)
    lists = {split: folder / name for split, name in PAPER_LISTS.items()}
    missing = [str(path) for path in lists.values() if not path.is_file()]
    if missing:
        raise DatasetFormatError(folder, f"split lists missing: {', '.join(missing)}")
    return lists


def apply_paper_split(karpathy_json: Path, lists: Mapping[str, Path], out_json: Path) -> Path:
    """Write the Karpathy file ``karpathy_json`` with each image in its paper split to
    ``out_json``; images no list names go to ``excluded_images`` (counted in ``rejects``)."""
    karpathy_json = Path(karpathy_json)
    document = read_json_document(karpathy_json)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DatasetFormatError(karpathy_json, "expected an object with an 'images' list")
    records = document["images"]
    known = {str(r.get("filename")) for r in records if isinstance(r, dict)}
    splits = paper_splits(lists, known)
    kept: list[dict[str, Any]] = []
    excluded = list(document.get("excluded_images", []))
    for record in records:
        split = splits.get(str(record.get("filename")))
        if split is None:
            excluded.append(
                {
                    "image_id": str(record.get("cocoid", record.get("filename"))),
                    "path": str(karpathy_json),
                    "reason": "not in the authors' split lists",
                }
            )
            continue
        kept.append({**record, "split": split})
    out = {**document, "images": kept, "excluded_images": excluded}
    write_text_atomic(Path(out_json), json.dumps(out, ensure_ascii=False))
    return Path(out_json)


def with_paper_split(
    raw: RawDataset, folder: Path, location: str, sha256: Mapping[str, str] | None = None
) -> RawDataset:
    """``raw`` (the ``coco`` source's files under ``folder``) on the authors' split."""
    lists = provide_lists(location, Path(folder) / LISTS_FOLDER, sha256)
    out_json = apply_paper_split(Path(raw.karpathy_json), lists, Path(folder) / PAPER_JSON)
    return replace(raw, karpathy_json=str(out_json), declared_images=dict(PAPER_SPLIT_SIZES))
