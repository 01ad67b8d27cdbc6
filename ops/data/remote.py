"""Public datasets: fetch them with :mod:`ops.data.sources` and describe the result as a
:class:`RawDataset` that the same real-format loaders read."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ops.data.acquire import RawDataset
from ops.data.flickr30k_entities import parse_sentence_file
from ops.data.sources import FLICKR30K_IMAGES_FOLDER, DatasetSource, acquire, get_source
from ops.data.tables import DatasetFormatError
from ops.data.tokenize import tokenize
from ops.storage.atomic import write_text_atomic
from ops.storage.paths import raw_dir

# Split sizes as published: Flickr30K Entities lists; Karpathy's COCO split with restval
# folded into train.
DECLARED_IMAGES = {
    "flickr30k_entities": {"train": 29783, "val": 1000, "test": 1000},
    "coco": {"train": 113287, "val": 5000, "test": 5000},
}
ENTITIES_JSON = "dataset_flickr30k_entities.json"


def _find(folder: Path, name: str) -> Path:
    matches = sorted(folder.rglob(name))
    if not matches:
        raise FileNotFoundError(f"{name} not found under {folder} after download and extraction")
    return matches[0]


def _read_split_list(path: Path) -> list[str]:
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [i for i in ids if i]


def write_entities_karpathy_json(entities_root: Path, image_folder: str, out_json: Path) -> Path:
    """A Karpathy-style JSON built from Flickr30K Entities' Sentences/ and split lists, so the
    Entities dataset takes the same caption loader as every other dataset."""
    images = []
    sentence_id = 0
    for split in ("train", "val", "test"):
        for image_id in _read_split_list(_find(entities_root, f"{split}.txt")):
            sentence_file = entities_root / "Sentences" / f"{image_id}.txt"
            if not sentence_file.is_file():
                raise DatasetFormatError(sentence_file, f"listed in {split}.txt but missing")
            sentences = []
            for parsed in parse_sentence_file(sentence_file):
                sentences.append(
                    {
                        "raw": parsed.text,
                        "tokens": tokenize(parsed.text),
                        "imgid": len(images),
                        "sentid": sentence_id,
                    }
                )
                sentence_id += 1
            images.append(
                {
                    "filename": f"{image_id}.jpg",
                    "filepath": image_folder,
                    "imgid": len(images),
                    "split": split,
                    "sentids": [s["sentid"] for s in sentences],
                    "sentences": sentences,
                }
            )
    write_text_atomic(out_json, json.dumps({"dataset": "flickr30k_entities", "images": images}))
    return out_json


def acquire_public(
    name: str,
    root: Path,
    local_path: str | None = None,
    log: Callable[[str], None] = print,
    source: DatasetSource | None = None,
    dataset: str | None = None,
) -> RawDataset:
    """Download (resumably, verified) what can be downloaded, take the rest from
    ``local_path``, and say where the loaders find it. ``dataset`` is the registered name
    (default: the source's name); the files go to ``raw/<dataset>/``."""
    started = time.perf_counter()
    dataset = dataset or name
    folder = raw_dir(root, dataset)
    last_logged = [0.0]

    def progress(done: int, total: int | None) -> None:
        if time.monotonic() - last_logged[0] > 10:
            last_logged[0] = time.monotonic()
            of = f" of {total / 1e6:.0f} MB" if total else ""
            log(f"{name}: {done / 1e6:.0f} MB{of}")

    acquire(source or get_source(name), folder, Path(local_path) if local_path else None, progress)
    if name == "flickr30k":
        return RawDataset(
            dataset=dataset,
            karpathy_json=str(_find(folder, "dataset_flickr30k.json")),
            image_root=str(folder / FLICKR30K_IMAGES_FOLDER),
            seconds=time.perf_counter() - started,
        )
    if name == "flickr30k_entities":
        json_path = write_entities_karpathy_json(
            folder, FLICKR30K_IMAGES_FOLDER, folder / ENTITIES_JSON
        )
        return RawDataset(
            dataset=dataset,
            karpathy_json=str(json_path),
            image_root=str(folder),
            entities_root=str(_find(folder, "Sentences").parent),
            declared_images=DECLARED_IMAGES[name],
            seconds=time.perf_counter() - started,
        )
    if name == "coco":
        return RawDataset(
            dataset=dataset,
            karpathy_json=str(_find(folder, "dataset_coco.json")),
            image_root=str(folder),
            declared_images=DECLARED_IMAGES[name],
            seconds=time.perf_counter() - started,
        )
    raise ValueError(f"no public dataset named {name!r}")
