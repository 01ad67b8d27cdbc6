"""Writing the synthetic dataset to disk, complete or not at all, and reusing an equal one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ops.data.synthetic.annotations import annotation_xml
from ops.data.synthetic.captions import Phrase, caption_texts, describe_scene
from ops.data.synthetic.scenes import render_scene, sample_scene
from ops.data.tables import CAPTIONS_PER_IMAGE
from ops.data.tokenize import tokenize

FORMAT_VERSION = 1
DATASET_NAME = "synthetic"
JSON_NAME = f"dataset_{DATASET_NAME}.json"
GENERATION_NAME = "generation.json"
JPEG_QUALITY = 90


@dataclass
class SyntheticSummary:
    out_dir: Path
    counts: dict[str, int]
    n_captions: int
    n_phrases: int
    seconds: float
    reused: bool = False


def image_id_for(index: int) -> str:
    return f"s{index + 1:07d}"


def _split_for(index: int, n_train: int, n_val: int) -> str:
    if index < n_train:
        return "train"
    return "val" if index < n_train + n_val else "test"


def _write_dataset(
    target: Path,
    parameters: dict[str, int],
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Write every file into ``target`` (a fresh directory); returns (captions, phrases)."""
    seed = parameters["seed"]
    image_size = parameters["image_size"]
    per_image = parameters["captions_per_image"]
    n_train, n_val = parameters["n_train"], parameters["n_val"]
    total = n_train + n_val + parameters["n_test"]
    for folder in ("images", "Sentences", "Annotations"):
        (target / folder).mkdir()
    n_captions = n_phrases = 0
    with open(target / JSON_NAME, "w", encoding="utf-8") as handle:
        handle.write('{"images": [')
        for index in range(total):
            image_id = image_id_for(index)
            scene = sample_scene(seed, index, image_size)
            render_scene(scene, seed, index).save(
                target / "images" / f"{image_id}.jpg", "JPEG", quality=JPEG_QUALITY
            )
            described = describe_scene(scene, seed, index, per_image)
            sentences = []
            marked_lines = []
            for position, segments in enumerate(described.captions):
                raw, marked = caption_texts(segments)
                sentid = index * per_image + position
                # The text features' tokenizer, so the JSON's tokens are the words they use.
                sentences.append(
                    {"tokens": tokenize(raw), "raw": raw, "imgid": index, "sentid": sentid}
                )
                marked_lines.append(marked)
                n_phrases += sum(isinstance(segment, Phrase) for segment in segments)
            n_captions += len(sentences)
            record = {
                "filename": f"{image_id}.jpg",
                "imgid": index,
                "split": _split_for(index, n_train, n_val),
                "sentids": [sentence["sentid"] for sentence in sentences],
                "sentences": sentences,
            }
            handle.write((", " if index else "") + json.dumps(record))
            (target / "Sentences" / f"{image_id}.txt").write_text(
                "".join(line + "\n" for line in marked_lines), encoding="utf-8"
            )
            (target / "Annotations" / f"{image_id}.xml").write_text(
                annotation_xml(image_id, scene, described), encoding="utf-8"
            )
            if progress is not None and ((index + 1) % 500 == 0 or index + 1 == total):
                progress(index + 1, total)
        handle.write(f'], "dataset": "{DATASET_NAME}"}}')
    return n_captions, n_phrases


def _read_generation(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / GENERATION_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove_stale_partials(out_dir: Path, max_age_s: float = 3600.0) -> None:
    now = time.time()
    for pattern in (f".{out_dir.name}.partial-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > max_age_s:
                    shutil.rmtree(stale)


def _summary(out_dir: Path, record: dict, seconds: float, reused: bool) -> SyntheticSummary:
    return SyntheticSummary(
        out_dir=out_dir,
        counts=dict(record["counts"]),
        n_captions=int(record["n_captions"]),
        n_phrases=int(record["n_phrases"]),
        seconds=seconds,
        reused=reused,
    )


def generate_synthetic(
    out_dir: Path,
    *,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    image_size: int,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSummary:
    """Write the synthetic dataset to ``out_dir``; reuse it when already complete and equal.

    The files are written into a sibling ``.<name>.partial-*`` directory that replaces
    ``out_dir`` only once complete, so ``out_dir`` is never half written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("split sizes must be non-negative and not all zero")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be positive, got {captions_per_image}")
    parameters = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "image_size": int(image_size),
        "captions_per_image": int(captions_per_image),
    }
    existing = _read_generation(out_dir) if out_dir.exists() else None
    if existing is not None and existing.get("parameters") == parameters:
        return _summary(out_dir, existing, time.perf_counter() - started, reused=True)
    if out_dir.exists() and existing is None and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and has no {GENERATION_NAME}; "
            "refusing to replace a directory this generator did not write"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        partial.chmod(0o755)  # mkdtemp's private mode would otherwise stick to out_dir
        n_captions, n_phrases = _write_dataset(partial, parameters, progress)
        record = {
            "parameters": parameters,
            "counts": {"train": n_train, "val": n_val, "test": n_test},
            "n_captions": n_captions,
            "n_phrases": n_phrases,
            "pillow": Image.__version__,
        }
        # Written last: its presence marks the directory complete.
        (partial / GENERATION_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
        _swap_into_place(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _summary(out_dir, record, time.perf_counter() - started, reused=False)


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / "dataset")
        os.replace(partial, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(partial, out_dir)
