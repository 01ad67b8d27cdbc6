"""Precomputed-feature datasets: the VSE++ / SCAN ``precomp`` folder layout.

A folder holds, per split, ``{split}_ims.npy`` (``(N, D)`` image features, or ``(N, R, D)``
region features that are mean-pooled into one vector per image), ``{split}_caps.txt`` (one
caption per line; with ``5N`` lines caption ``k`` belongs to image ``k // 5``) and optionally
``{split}_ids.txt`` (one image id per line). Files ``train``, ``dev`` and ``test`` are required;
``dev`` is the project's ``val`` split, and ``testall`` (COCO's 5K test images, of which
``test`` is the first 1K) replaces ``test`` when it is there.

The ``.npy`` files are only ever memory-mapped and read in row blocks, so a COCO-size folder
costs the process one block at a time, never a whole matrix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ops.data.tables import (
    CAPTIONS_PER_IMAGE,
    REJECT_COLUMNS,
    DatasetFormatError,
    DatasetTables,
    empty_frame,
)
from ops.storage.parquet_io import FeatureWriter

# Project split -> the precomp file prefixes that can hold it, in order of preference.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("dev",),
    "test": ("testall", "test"),
}
POOLING = "mean over regions"
# The image feature file's variant: no backbone ran.
PRECOMP_VARIANT = "precomp"
# Rows scanned per block: 4,096 rows x 4,096-d float32 is 64 MiB.
BLOCK_ROWS = 4096
# Feature values read from a .npy per gather (64 MiB of float32).
GATHER_ELEMENTS = 1 << 24
EMPTY_CAPTION = "empty caption line"
NON_FINITE_FEATURES = "image feature row holds NaN or Inf"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PrecompSplit:
    """One split's files, as found in the folder."""

    split: str
    prefix: str
    features: Path
    captions: Path
    ids: Path | None


def precomp_splits(folder: Path) -> list[PrecompSplit]:
    """The folder's train / val / test files; a missing split is an error naming its file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(folder, "precomp dataset folder does not exist")
    found = []
    for split, prefixes in SPLIT_FILES.items():
        prefix = next((p for p in prefixes if (folder / f"{p}_ims.npy").is_file()), None)
        if prefix is None:
            raise DatasetFormatError(
                folder / f"{prefixes[-1]}_ims.npy",
                f"precomp split {split!r} is missing: expected "
                + " or ".join(f"{p}_ims.npy" for p in prefixes),
            )
        captions = folder / f"{prefix}_caps.txt"
        if not captions.is_file():
            raise DatasetFormatError(captions, f"precomp split {split!r} has no captions file")
        ids = folder / f"{prefix}_ids.txt"
        found.append(
            PrecompSplit(
                split,
                prefix,
                folder / f"{prefix}_ims.npy",
                captions,
                ids if ids.is_file() else None,
            )
        )
    return found


def open_features(path: Path) -> np.ndarray:
    """The ``.npy`` memory-mapped read-only; it must be a 2-D or 3-D float array."""
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise DatasetFormatError(path, f"not a readable .npy array ({error})") from None
    if matrix.ndim not in (2, 3) or not np.issubdtype(matrix.dtype, np.floating):
        raise DatasetFormatError(
            path,
            f"expected a float array of shape (N, D) or (N, R, D), found {matrix.dtype} "
            f"with shape {matrix.shape}",
        )
    if matrix.shape[0] == 0 or matrix.shape[-1] == 0:
        raise DatasetFormatError(path, f"holds no features (shape {matrix.shape})")
    return matrix


def feature_dim(matrix: np.ndarray) -> int:
    return int(matrix.shape[-1])


def pooled_blocks(matrix: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, float32 block)`` of one vector per image, regions mean-pooled."""
    for start in range(0, matrix.shape[0], rows):
        block = np.asarray(matrix[start : start + rows], dtype=np.float32)
        if block.ndim == 3:
            block = block.mean(axis=1, dtype=np.float32)
        yield start, block


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetFormatError(path, f"not UTF-8 text ({error})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def split_image_ids(files: PrecompSplit, n_images: int) -> list[str]:
    """The split's image ids: ``{split}_ids.txt`` when present, else ``<prefix>_<row>``."""
    if files.ids is None:
        return [f"{files.prefix}_{row}" for row in range(n_images)]
    ids = [line.strip() for line in _read_lines(files.ids)]
    if len(ids) != n_images:
        raise DatasetFormatError(
            files.ids, f"{len(ids)} ids but {files.features.name} has {n_images} images"
        )
    if any(not image_id for image_id in ids):
        line = ids.index("") + 1
        raise DatasetFormatError(files.ids, "empty image id", line=line)
    if len(set(ids)) != len(ids):
        raise DatasetFormatError(files.ids, "image ids are not unique")
    return ids


def non_finite_rows(matrix: np.ndarray) -> np.ndarray:
    """Row numbers whose features hold NaN or Inf, found block by block."""
    bad = [
        start + np.flatnonzero(~np.isfinite(block).all(axis=1))
        for start, block in pooled_blocks(matrix)
    ]
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def _split_tables(
    files: PrecompSplit, dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    matrix = open_features(files.features)
    n_images = int(matrix.shape[0])
    captions = _read_lines(files.captions)
    if len(captions) != CAPTIONS_PER_IMAGE * n_images:
        raise DatasetFormatError(
            files.captions,
            f"{len(captions)} captions for {n_images} images in {files.features.name}: "
            f"expected exactly {CAPTIONS_PER_IMAGE} per image ({CAPTIONS_PER_IMAGE * n_images})",
        )
    image_ids = split_image_ids(files, n_images)
    bad_rows = set(non_finite_rows(matrix).tolist())
    rejects = [
        {
            "dataset": dataset,
            "stage": "images",
            "item_id": image_ids[row],
            "path": f"{files.features}:{row}",
            "reason": NON_FINITE_FEATURES,
        }
        for row in sorted(bad_rows)
    ]
    caption_rows = []
    for line, text in enumerate(captions):
        row, index = divmod(line, CAPTIONS_PER_IMAGE)
        caption_id = f"{image_ids[row]}#{index}"
        if row in bad_rows:
            continue
        if not text.strip():
            rejects.append(
                {
                    "dataset": dataset,
                    "stage": "captions",
                    "item_id": caption_id,
                    "path": f"{files.captions}:{line + 1}",
                    "reason": EMPTY_CAPTION,
                }
            )
            continue
        caption_rows.append((caption_id, image_ids[row], index, text.strip()))
    kept = [row for row in range(n_images) if row not in bad_rows]
    images = pd.DataFrame(
        {
            "dataset": dataset,
            "image_id": [image_ids[row] for row in kept],
            "split": files.split,
            "path": pd.Series([pd.NA] * len(kept), dtype="string"),
            "width": pd.Series([pd.NA] * len(kept), dtype="Int64"),
            "height": pd.Series([pd.NA] * len(kept), dtype="Int64"),
        }
    )
    caption_frame = pd.DataFrame(
        caption_rows, columns=["caption_id", "image_id", "caption_index", "text"]
    ).assign(dataset=dataset, split=files.split)
    reject_frame = pd.DataFrame(rejects) if rejects else empty_frame(REJECT_COLUMNS)
    listed = pd.DataFrame({"image_id": image_ids, "split": files.split})
    return images, caption_frame, reject_frame, listed


def load_precomp(folder: Path, dataset: str) -> tuple[DatasetTables, pd.DataFrame]:
    """Images, captions and rejects of a precomp folder (no phrases: it has no boxes), and
    every listed image's id and split, rejected ones included.

    A feature row with NaN or Inf rejects its image and that image's captions; an empty
    caption line is rejected on its own. Any other defect is a :class:`DatasetFormatError`
    naming the file, raised before anything could be published."""
    images, captions, rejects, listed = zip(
        *(_split_tables(files, dataset) for files in precomp_splits(folder)), strict=True
    )
    every_image = pd.concat(listed, ignore_index=True)
    repeated = every_image["image_id"].duplicated()
    if repeated.any():
        first = every_image.loc[repeated, "image_id"].iloc[0]
        raise DatasetFormatError(folder, f"image id {first!r} appears twice")
    non_empty_rejects = [frame for frame in rejects if len(frame)]
    tables = DatasetTables(
        dataset=dataset,
        images=pd.concat(images, ignore_index=True),
        captions=pd.concat(captions, ignore_index=True),
        rejects=pd.concat(non_empty_rejects, ignore_index=True)
        if non_empty_rejects
        else empty_frame(REJECT_COLUMNS),
    ).conformed()
    return tables, every_image


@dataclass(frozen=True)
class PrecompFeatureStats:
    rows: int
    dim: int
    seconds: float
    pooling: str


def write_precomp_image_features(
    folder: Path,
    images: pd.DataFrame,
    out_path: Path,
    dataset: str,
    progress: Progress | None = None,
) -> PrecompFeatureStats:
    """The folder's image features for the rows of ``images``, in the frame's order, to a
    feature file like any CNN's: read block by block from the memory-mapped ``.npy``."""
    started = time.perf_counter()
    splits = {files.split: files for files in precomp_splits(folder)}
    opened = {split: open_features(files.features) for split, files in splits.items()}
    dims = {feature_dim(matrix) for matrix in opened.values()}
    if len(dims) != 1:
        raise DatasetFormatError(folder, f"splits disagree on the feature size: {sorted(dims)}")
    dim = dims.pop()
    pooled = any(matrix.ndim == 3 for matrix in opened.values())
    metadata = {
        "kind": "image",
        "dataset": dataset,
        "backbone": PRECOMP_VARIANT,
        "variant": PRECOMP_VARIANT,
        "source": str(folder),
        "pooling": POOLING if pooled else "none",
    }
    image_ids = images["image_id"].astype(str).to_numpy()
    split_names = images["split"].astype(str).to_numpy()
    file_rows = _file_rows(folder, splits, image_ids, split_names)
    total = len(images)
    schema = {"image_id": pa.string(), "split": pa.string()}
    with FeatureWriter(out_path, schema, dim, metadata) as writer:
        for start in range(0, total, BLOCK_ROWS):
            stop = min(total, start + BLOCK_ROWS)
            block = np.empty((stop - start, dim), dtype=np.float32)
            for split, matrix in opened.items():
                at = np.flatnonzero(split_names[start:stop] == split)
                if at.size:
                    block[at] = _pooled_rows(matrix, file_rows[start:stop][at])
            writer.write(
                {"image_id": image_ids[start:stop], "split": split_names[start:stop]}, block
            )
            if progress is not None:
                progress(stop, total)
    return PrecompFeatureStats(
        rows=total,
        dim=dim,
        seconds=time.perf_counter() - started,
        pooling=metadata["pooling"],
    )


def _file_rows(
    folder: Path,
    splits: dict[str, PrecompSplit],
    image_ids: np.ndarray,
    split_names: np.ndarray,
) -> np.ndarray:
    """Each image's row in its split's ``.npy``; an image the folder lacks is an error."""
    rows = np.full(len(image_ids), -1, dtype=np.int64)
    for split, files in splits.items():
        mine = np.flatnonzero(split_names == split)
        n_images = int(open_features(files.features).shape[0])
        rows[mine] = pd.Index(split_image_ids(files, n_images)).get_indexer(image_ids[mine])
    if (rows < 0).any():
        first = int(np.flatnonzero(rows < 0)[0])
        split = str(split_names[first])
        raise DatasetFormatError(
            splits[split].features if split in splits else folder,
            f"image {image_ids[first]!r} of split {split!r} is not in the precomp folder",
        )
    return rows


def _pooled_rows(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows]`` as float32, read in file order, regions mean-pooled."""
    order = np.argsort(rows, kind="stable")
    values = np.empty((rows.size, matrix.shape[-1]), dtype=np.float32)
    # Region arrays are read a few rows at a time: 4,096 rows × 36 regions × 2,048-d would
    # be 1.2 GB at once.
    row_elements = int(np.prod(matrix.shape[1:]))
    step = max(1, GATHER_ELEMENTS // row_elements)
    for first in range(0, rows.size, step):
        picked = order[first : first + step]
        gathered = np.asarray(matrix[rows[picked]], dtype=np.float32)
        if gathered.ndim == 3:
            gathered = gathered.mean(axis=1, dtype=np.float32)
        values[picked] = gathered
    return values
