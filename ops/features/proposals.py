"""Region proposals per image (EdgeBoxes or selective search), streamed to Parquet.

Every image gets exactly ``num_proposals`` candidates ``r0..r{N-1}`` (source ``proposal``):

1. with ``whole_image``, the whole-image box first (off in the paper's setup);
2. the searcher's boxes in its order, after dropping boxes with a side under
   ``MIN_BOX_SIDE`` pixels, exact duplicates and the whole image itself (selective search
   always ends with it): whether the whole image is a candidate is ``whole_image``'s say
   alone;
3. when the search found fewer than N, a fixed fill: sliding windows of the image's aspect at
   scales 0.8, 0.64, 0.5, … of its sides with half-window strides, largest first, skipping
   boxes already present (never the whole image); if even those run out (tiny images), the
   candidates so far repeat in order.

The searcher is EdgeBoxes (OpenCV ximgproc with the structured-edge model file
``edge_model_path``) when a model path is given, selective search otherwise; it sees the image at
full resolution unless ``max_side`` downscales it (boxes are mapped back). Ground-truth boxes
of training phrases can be added as extra candidates ``g0..gM`` (source ``ground_truth``),
as the protocol does during training only. Boxes are 0-based pixel coordinates with exclusive
``x2, y2``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ops.features.settings import ProposalSettings
from ops.metrics.localization_rule import GROUND_TRUTH_COLUMNS, evaluable_phrases
from ops.storage.atomic import atomic_path

Progress = Callable[[int, int], None]
METHODS = (
    "auto",
    "selective_search_fast",
    "selective_search_opencv_fast",
    "selective_search_quality",
    "edge_boxes",
)
PROPOSAL_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("region_id", pa.string(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
    ]
)
# OpenCV's selective-search presets assume photos of ~500 px; on smaller inputs their fixed
# 100-pixel minimum segment merges whole objects away, so it scales with the searched area.
REFERENCE_AREA = 500 * 375
REFERENCE_SEGMENT_MIN_SIZE = 100
IMAGES_PER_TASK = 32
# Boxes with a side under this many pixels are dropped from the search's output.
MIN_BOX_SIDE = 8


# Fill windows, as fractions of the image's sides, largest first (the whole image excluded).
FILL_SCALES = (0.8, 0.64, 0.5, 0.4, 0.32, 0.25, 0.2, 0.16, 0.125, 0.1)
CONTRIB_PACKAGE = "opencv-contrib-python-headless"


@dataclass(frozen=True)
class SearchSettings:
    """What each search worker needs: the stage's settings with the searcher resolved."""

    method: str
    num_proposals: int
    min_size: int
    max_side: int | None
    whole_image: bool
    model_path: str | None


@dataclass(frozen=True)
class ProposalStats:
    images: int
    proposals: int
    ground_truth: int
    filled: int  # candidates from the fixed fill, not the searcher
    seconds: float
    images_per_second: float
    proposals_per_image: float


def _seed_c_rand(seed: int = 0) -> None:
    """OpenCV ranks selective-search boxes with C ``rand()``; seeding it makes runs repeatable."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).srand(seed)


def _read_bgr(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:  # formats OpenCV cannot read (GIF, ...) go through PIL
        try:
            with Image.open(path) as opened:
                image = np.asarray(opened.convert("RGB"))[:, :, ::-1].copy()
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({err})") from err
    return image


def _segment_min_size(height: int, width: int) -> int:
    return max(10, round(REFERENCE_SEGMENT_MIN_SIZE * height * width / REFERENCE_AREA))


def _selective_search(bgr: np.ndarray, method: str) -> np.ndarray:
    """Selective search with an area-scaled minimum segment; ``(n, 4)`` xywh in rank order.

    ``selective_search_fast`` is OpenCV's fast recipe without its texture similarity and its
    coarsest segmentation level: half the time on small images at the same recall of
    object-sized boxes, which is what fits the 2-core budget. ``selective_search_opencv_fast``
    and ``selective_search_quality`` are OpenCV's own recipes.
    """
    seg = cv2.ximgproc.segmentation
    color = seg.createSelectiveSearchSegmentationStrategyColor
    texture = seg.createSelectiveSearchSegmentationStrategyTexture
    size = seg.createSelectiveSearchSegmentationStrategySize
    fill = seg.createSelectiveSearchSegmentationStrategyFill
    multiple = seg.createSelectiveSearchSegmentationStrategyMultiple
    search = seg.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    search.addImage(hsv)
    search.addImage(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab))
    if method == "selective_search_fast":
        thresholds: tuple[int, ...] = (150, 300)
        strategies = [multiple(color(), fill(), size()), multiple(fill(), size())]
    else:
        thresholds = (150, 300, 450)
        strategies = [
            multiple(color(), fill(), texture(), size()),
            multiple(fill(), texture(), size()),
        ]
    if method == "selective_search_quality":
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        search.addImage(gray)
        search.addImage(np.ascontiguousarray(hsv[:, :, 0]))
        search.addImage(cv2.merge([bgr[:, :, 2], bgr[:, :, 1], gray]))
        thresholds = (150, 300, 450, 600, 750)
        strategies += [fill(), size()]
    min_segment = _segment_min_size(*bgr.shape[:2])
    for k in thresholds:
        search.addGraphSegmentation(seg.createGraphSegmentation(0.8, float(k), min_segment))
    for strategy in strategies:
        search.addStrategy(strategy)
    _seed_c_rand(0)
    rects = search.process()
    return np.asarray(rects, dtype=np.float64).reshape(-1, 4)


_EDGE_MODELS: dict[str, Any] = {}


def _edge_boxes(bgr: np.ndarray, model_path: str, max_boxes: int) -> np.ndarray:
    detector = _EDGE_MODELS.get(model_path)
    if detector is None:
        detector = cv2.ximgproc.createStructuredEdgeDetection(model_path)
        _EDGE_MODELS[model_path] = detector
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    edges = detector.detectEdges(rgb)
    orientation = detector.computeOrientation(edges)
    edges = detector.edgesNms(edges, orientation)
    finder = cv2.ximgproc.createEdgeBoxes()
    finder.setMaxBoxes(max_boxes)
    found = finder.getBoundingBoxes(edges, orientation)
    rects = found[0] if isinstance(found, tuple) else found
    return np.asarray(rects, dtype=np.float64).reshape(-1, 4)


def fill_windows(width: int, height: int, min_size: int) -> np.ndarray:
    """The fixed fill: windows of the image's aspect at ``FILL_SCALES`` of its sides, each
    scale's windows at half-window strides, row by row (sides under ``min_size`` skipped,
    unless the image itself is that small)."""
    boxes = []
    floor = min(min_size, width, height)
    for scale in FILL_SCALES:
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        if min(w, h) < floor:
            continue
        xs = np.unique(np.append(np.arange(0, width - w + 1, max(1, w // 2)), width - w))
        ys = np.unique(np.append(np.arange(0, height - h + 1, max(1, h // 2)), height - h))
        for y in ys:
            for x in xs:
                boxes.append((x, y, x + w, y + h))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def exactly_n(
    found: np.ndarray, n: int, width: int, height: int, min_size: int, whole_image: bool
) -> tuple[np.ndarray, int]:
    """``(n candidates, how many came from the fill)`` from the searcher's ``found`` boxes
    (already filtered), per the module's rule."""
    whole = np.array([[0.0, 0.0, float(width), float(height)]])
    found = found[~np.all(np.isclose(found, whole), axis=1)]
    candidates = _unique_rows(np.vstack([whole, found] if whole_image else [found]))[:n]
    filled = 0
    if len(candidates) < n:
        fill = fill_windows(width, height, min_size)
        fill = fill[~np.all(np.isclose(fill, whole), axis=1)]
        before = len(candidates)
        candidates = _unique_rows(np.vstack([candidates, fill]))[:n]
        filled = len(candidates) - before
    if len(candidates) < n:
        repeats = np.resize(np.arange(len(candidates)), n - len(candidates))
        candidates = np.vstack([candidates, candidates[repeats]])
        filled += len(repeats)
    return candidates, filled


def _unique_rows(boxes: np.ndarray) -> np.ndarray:
    """The rows of ``boxes`` without repeats, in first-seen order."""
    if not len(boxes):
        return boxes
    return boxes[np.sort(np.unique(boxes, axis=0, return_index=True)[1])]


def search_image(path: str, settings: SearchSettings) -> tuple[np.ndarray, int, int, int]:
    """``(exactly num_proposals boxes x1y1x2y2 in original pixels, filled, width, height)``;
    see the module docstring for the order."""
    bgr = _read_bgr(path)
    height, width = bgr.shape[:2]
    scale = 1.0
    if settings.max_side is not None:
        scale = min(1.0, settings.max_side / max(height, width))
    searched = bgr
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        searched = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    if settings.method == "edge_boxes":
        assert settings.model_path is not None
        rects = _edge_boxes(searched, settings.model_path, settings.num_proposals * 2)
    else:
        rects = _selective_search(searched, settings.method)
    boxes = np.zeros((0, 4))
    if len(rects):
        # Pixel-exact duplicates only arise on the searched grid, so dedupe before rescaling.
        rects = _unique_rows(rects)
        boxes = np.column_stack(
            [rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]]
        )
        boxes = np.clip(boxes / scale, 0, [width, height, width, height])
        big_enough = ((boxes[:, 2] - boxes[:, 0]) >= settings.min_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= settings.min_size
        )
        boxes = boxes[big_enough]
    candidates, filled = exactly_n(
        boxes, settings.num_proposals, width, height, settings.min_size, settings.whole_image
    )
    return candidates, filled, width, height


def _search_chunk(
    chunk: Sequence[tuple[str, str]], settings: SearchSettings
) -> list[tuple[str, np.ndarray, int]]:
    results = []
    for image_id, path in chunk:
        boxes, filled, _, _ = search_image(path, settings)
        results.append((image_id, boxes, filled))
    return results


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


def _ground_truth_by_image(phrases: pd.DataFrame | None) -> dict[str, np.ndarray]:
    if phrases is None or phrases.empty:
        return {}
    columns = list(GROUND_TRUTH_COLUMNS)
    train = phrases[phrases["split"].astype(str) == "train"].dropna(subset=columns)
    result: dict[str, np.ndarray] = {}
    for image_id, group in train.groupby(train["image_id"].astype(str), sort=False):
        boxes = group[columns].to_numpy(dtype=np.float64)
        result[str(image_id)] = boxes[np.sort(np.unique(boxes, axis=0, return_index=True)[1])]
    return result


def _batch(image_id: str, proposals: np.ndarray, ground_truth: np.ndarray | None) -> pa.RecordBatch:
    n_prop = len(proposals)
    n_gt = 0 if ground_truth is None else len(ground_truth)
    boxes = proposals if ground_truth is None else np.vstack([proposals, ground_truth])
    region_ids = [f"{image_id}/r{k}" for k in range(n_prop)] + [
        f"{image_id}/g{k}" for k in range(n_gt)
    ]
    columns = [
        pa.array([image_id] * (n_prop + n_gt), pa.string()),
        pa.array(region_ids, pa.string()),
        *(pa.array(boxes[:, i].astype(np.float32)) for i in range(4)),
        pa.array(["proposal"] * n_prop + ["ground_truth"] * n_gt, pa.string()),
        pa.array(np.r_[np.arange(n_prop), np.arange(n_gt)].astype(np.int32)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=PROPOSAL_SCHEMA)


def _results(
    tasks: list[list[tuple[str, str]]], settings: SearchSettings, num_workers: int
) -> Iterator[list[tuple[str, np.ndarray, int]]]:
    if num_workers <= 0:
        for chunk in tasks:
            yield _search_chunk(chunk, settings)
        return
    # Spawned, not forked: a fork inherits OpenCV's thread pool in whatever state the parent
    # left it, and the child can then block forever in cv2.setNumThreads.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=num_workers, initializer=_init_worker, mp_context=spawn
    ) as pool:
        # A bounded window of chunks in flight keeps memory flat on any dataset size.
        window = num_workers * 2
        pending = [pool.submit(_search_chunk, chunk, settings) for chunk in tasks[:window]]
        next_task = window
        while pending:
            yield pending.pop(0).result()
            if next_task < len(tasks):
                pending.append(pool.submit(_search_chunk, tasks[next_task], settings))
                next_task += 1


def resolve_method(method: str, model_path: str | Path | None) -> str:
    """The searcher to run: ``auto`` is EdgeBoxes when a model path is given, selective
    search otherwise. Refuses what cannot run here, naming what is missing."""
    if method not in METHODS:
        raise ValueError(f"unknown proposal method {method!r}; choose one of {METHODS}")
    if method == "auto":
        method = "edge_boxes" if model_path else "selective_search_fast"
    if not hasattr(cv2, "ximgproc"):
        raise RuntimeError(
            f"{method} needs OpenCV's contrib modules (cv2.ximgproc), which this OpenCV lacks: "
            f"install {CONTRIB_PACKAGE} (pip install {CONTRIB_PACKAGE}) in place of "
            "opencv-python"
        )
    if method == "edge_boxes" and (model_path is None or not Path(model_path).is_file()):
        raise ValueError(
            "edge_boxes needs OpenCV's structured-edge model file (model.yml.gz, from "
            f"opencv_extra/testdata/cv/ximgproc); no such file: {model_path!r}"
        )
    return method


def propose_regions(
    images: pd.DataFrame,
    out_path: Path,
    settings: ProposalSettings,
    *,
    num_workers: int,
    include_ground_truth_for: pd.DataFrame | None = None,
    progress: Progress | None = None,
) -> ProposalStats:
    """Write exactly ``settings.num_proposals`` candidates for every row of ``images`` to
    ``out_path`` (see the module docstring), grouped by image in order.

    ``settings.max_side``: larger images are searched downscaled to this longer side (None:
    full resolution); ``whole_image``: the whole-image box is candidate r0;
    ``edge_model_path``: the structured-edge model that EdgeBoxes needs (``method="auto"``
    runs EdgeBoxes when it is given). ``include_ground_truth_for``: phrases whose train-split
    ground-truth boxes join the candidates (other splits are ignored: the protocol adds them
    during training only). ``num_workers`` 0 searches in this process.
    """
    method = resolve_method(settings.method, settings.edge_model_path)
    missing = [name for name in ("image_id", "path") if name not in images.columns]
    if missing:
        raise ValueError(f"images table lacks columns {missing}")
    search = SearchSettings(
        method=method,
        num_proposals=settings.num_proposals,
        min_size=MIN_BOX_SIDE,
        max_side=settings.max_side,
        whole_image=settings.whole_image,
        model_path=settings.edge_model_path,
    )
    ground_truth = _ground_truth_by_image(include_ground_truth_for)
    pairs = list(zip(images["image_id"].astype(str), images["path"].astype(str), strict=True))
    tasks = [pairs[i : i + IMAGES_PER_TASK] for i in range(0, len(pairs), IMAGES_PER_TASK)]
    started = time.perf_counter()
    done = n_proposals = n_ground_truth = n_filled = 0
    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(tmp, PROPOSAL_SCHEMA, compression="zstd") as writer:
            for results in _results(tasks, search, num_workers):
                batches = []
                for image_id, boxes, filled in results:
                    extra = ground_truth.get(image_id)
                    batches.append(_batch(image_id, boxes, extra))
                    n_proposals += len(boxes)
                    n_filled += filled
                    n_ground_truth += 0 if extra is None else len(extra)
                writer.write_table(pa.Table.from_batches(batches, schema=PROPOSAL_SCHEMA))
                done += len(results)
                if progress is not None:
                    progress(done, len(pairs))
    seconds = time.perf_counter() - started
    return ProposalStats(
        images=done,
        proposals=n_proposals,
        ground_truth=n_ground_truth,
        filled=n_filled,
        seconds=seconds,
        images_per_second=done / seconds if seconds > 0 else 0.0,
        proposals_per_image=n_proposals / done if done else math.nan,
    )


def phrase_task_images(
    images: pd.DataFrame, phrases: pd.DataFrame, max_per_split: int
) -> pd.DataFrame:
    """Images that have at least one boxed, visual phrase (the first ``max_per_split`` per
    split, 0: all), grouped by split: each split's proposals and region features are then one
    contiguous run of rows, which training maps from disk without copying."""
    chosen = images[
        images["image_id"].isin(
            set(phrases["image_id"][evaluable_phrases(phrases, every_listed_type=False)])
        )
    ]
    if max_per_split:
        chosen = chosen.groupby("split", sort=False).head(max_per_split)
    return chosen.sort_values("split", kind="stable").reset_index(drop=True)
