"""The retrieval index of a dataset: its champion embedding network's image and caption
embeddings for every split, in Parquet and in faiss indexes, with what a query needs to be
encoded the way the training features were.

``index/<dataset>/`` holds ``manifest.json`` (which run, which feature files, the index
settings, each split's id range), ``images.parquet`` (image_id, split, path, feature) and
``captions.parquet`` (caption_id, image_id, split, text, feature) whose row i is faiss id i,
``images.faiss`` and ``captions.faiss``, ``text_encoder.npz`` (the text features' fitted
encoder) and ``text_branch.npz`` (the network's text branch as arrays, for torch-free text
queries). Rows are ordered by split (train, val, test, then any other), so that a split is
one range of ids. The folder is written in the staging area and swapped in whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa

from ops.data.dataset_store import load_dataset_table
from ops.features.text.encoder_store import encoder_path
from ops.features.text.text_features import TextEncoders
from ops.search.encoding import encode_texts, image_extractor
from ops.search.errors import SearchError
from ops.search.flat_file import FlatIndexFile
from ops.search.manifest import (
    INDEX_FORMAT,
    MANIFEST,
    NETWORK,
    TASK,
    TEXT_BRANCH,
    TEXT_ENCODER,
    no_model_message,
    read_manifest,
)
from ops.search.settings import IndexSettings
from ops.search.vectors import new_index, training_rows, write_index
from ops.storage.atomic import atomic_path, replace_directory, write_text_atomic
from ops.storage.input_fingerprints import check_inputs, run_input_paths
from ops.storage.parquet_io import FeatureWriter, iter_feature_batches, read_arrow, read_schema
from ops.storage.paths import dataset_table_file, index_dir, relative_to_root
from ops.storage.results_store import read_result, to_json, utc_now
from ops.storage.run_records import current_champion, decode_json, file_identity
from ops.storage.staging import staging_folder
from ops.training.trained_model import load_two_branch

SPLIT_ORDER = ("train", "val", "test")
# Captions re-encoded at build time to prove the query path reproduces the stored features.
VERIFY_CAPTIONS = 64
VERIFY_TOLERANCE = 1e-5

Log = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexBuild:
    manifest: dict[str, Any]
    rebuilt: bool  # False: the index on disk was already built from the same inputs
    seconds: float
    size_bytes: int
    folder: Path


def champion_run(root: Path, dataset: str) -> dict[str, Any]:
    """The ``training_runs`` row of the dataset's champion embedding network (features
    decoded), or a SearchError when there is none."""
    champion = current_champion(root, TASK, NETWORK, dataset)
    if champion is None:
        raise SearchError(no_model_message(dataset))
    runs = read_result(root, "training_runs", champion["run_id"])
    if runs.empty or not runs.iloc[0]["checkpoint"]:
        raise SearchError(f"champion run {champion['run_id']} of {dataset!r} has no checkpoint")
    run = runs.iloc[0].to_dict()
    run["features"] = decode_json(run["features"])
    return run


def split_ranges(splits: pd.Series) -> dict[str, list[int]]:
    """``{split: [start, stop)}`` of rows ordered by split (train, val, test, then others)."""
    counts = splits.value_counts()
    names = [s for s in SPLIT_ORDER if s in counts] + sorted(set(counts.index) - set(SPLIT_ORDER))
    ranges, start = {}, 0
    for name in names:
        ranges[name] = [start, start + int(counts[name])]
        start += int(counts[name])
    return ranges


def _split_batches(
    path: str, ranges: dict[str, list[int]], batch_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The feature file's rows in split order: one streamed pass over the file per split."""
    for split in ranges:
        for ids, matrix in iter_feature_batches(path, batch_rows):
            keep = (ids["split"] == split).to_numpy()
            if keep.any():
                yield ids[keep].reset_index(drop=True), matrix[keep]


def _training_sample(
    path: str, ranges: dict[str, list[int]], rows: np.ndarray, batch_rows: int
) -> np.ndarray:
    """Feature rows at positions ``rows`` (sorted) of the split-ordered sequence."""
    parts, seen = [], 0
    for _, matrix in _split_batches(path, ranges, batch_rows):
        wanted = rows[(rows >= seen) & (rows < seen + len(matrix))] - seen
        parts.append(matrix[wanted])
        seen += len(matrix)
    return np.concatenate(parts)


@dataclass(frozen=True)
class _Part:
    """One side of the index: a feature file, the branch embedding its rows, the id columns."""

    name: str
    features: str
    branch: Callable[[np.ndarray], np.ndarray]
    columns: dict[str, Callable[[pd.DataFrame], np.ndarray]]


def _build_part(
    part: _Part,
    folder: Path,
    settings: IndexSettings,
    dim: int,
    progress: Progress | None,
) -> dict[str, Any]:
    splits = read_arrow(part.features, ["split"]).column("split").to_pandas()
    ranges = split_ranges(splits)
    n_rows = len(splits)
    if n_rows == 0:
        raise SearchError(f"{part.features} has no rows to index")
    index_path = folder / f"{part.name}.faiss"
    # An exact index is written as the embeddings come (memory does not grow with the rows);
    # an approximate one is built in memory, as faiss builds it.
    index: faiss.Index | FlatIndexFile
    if settings.index_type == "flat":
        index = FlatIndexFile(index_path, dim, n_rows)
    else:
        index = new_index(settings, dim, n_rows)
    sample = training_rows(settings, n_rows)
    if sample is not None:
        vectors = _training_sample(part.features, ranges, sample, settings.chunk_rows)
        index.train(part.branch(vectors))
    schema = {name: pa.string() for name in part.columns}
    done = 0
    with FeatureWriter(folder / f"{part.name}.parquet", schema, dim) as writer:
        for ids, matrix in _split_batches(part.features, ranges, settings.chunk_rows):
            embeddings = part.branch(matrix)
            index.add(embeddings)
            writer.write({name: column(ids) for name, column in part.columns.items()}, embeddings)
            done += len(ids)
            if progress is not None:
                progress(done, n_rows)
    if isinstance(index, FlatIndexFile):
        index.close()
    else:
        write_index(index, index_path)
    return {"rows": n_rows, "splits": ranges}


def verify_text_encoder(encoders: TextEncoders, text_features: str, captions: pd.Series) -> float:
    """Re-encode the first captions of ``text_features`` from their text and compare with the
    stored rows; the largest difference, or a SearchError when it is more than rounding."""
    ids, stored = next(iter_feature_batches(text_features, VERIFY_CAPTIONS))
    texts = captions.reindex(ids["caption_id"]).fillna("").tolist()
    encoded, _ = encode_texts(encoders, texts)
    difference = float(np.abs(encoded - stored).max()) if len(texts) else 0.0
    if not difference <= VERIFY_TOLERANCE:
        raise SearchError(
            f"{text_features}: re-encoding {len(texts)} captions with its saved encoder differs "
            f"from the stored features by up to {difference:.3g}; re-materialize text_features"
        )
    return difference


def _fingerprint(run: dict[str, Any], files: dict[str, Path], settings: IndexSettings) -> str:
    identities = {name: file_identity(path) for name, path in files.items()}
    document = {
        "format": INDEX_FORMAT,
        "run_id": run["run_id"],
        "files": identities,
        "settings": settings.model_dump(),
    }
    return hashlib.sha256(to_json(document).encode()).hexdigest()


def _input_files(root: Path, dataset: str, run: dict[str, Any]) -> dict[str, Path]:
    features = run["features"]
    files = {
        "checkpoint": Path(run["checkpoint"]),
        "image_features": Path(features["image_features"]),
        "text_features": Path(features["text_features"]),
        "text_encoder": encoder_path(features["text_features"]),
        "images": dataset_table_file(root, dataset, "images"),
        "captions": dataset_table_file(root, dataset, "captions"),
    }
    for name, path in files.items():
        if not path.exists():
            hint = " (re-materialize text_features)" if name == "text_encoder" else ""
            raise SearchError(f"cannot index {dataset!r}: its {name} file {path} is missing{hint}")
    return files


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def build_retrieval_index(
    root: Path,
    dataset: str,
    settings: IndexSettings | None = None,
    device: str = "auto",
    log: Log = lambda message: None,
    progress: Callable[[str], Progress] | None = None,
) -> IndexBuild:
    """Index ``dataset`` with its champion embedding network (see the module docstring).
    ``progress(label)`` gives a ``(done, total)`` callback per side (images, captions).

    An index already built from the same champion, files and settings is kept as it is. A
    champion whose input files changed since it was trained is refused (``InputsChanged``)."""
    started = time.perf_counter()
    settings = settings or IndexSettings()
    run = champion_run(root, dataset)
    # A champion whose features were refitted since is not applied to the new ones: the
    # index it built stays until a model trained on them is champion.
    recorded = run["features"]
    paths = run_input_paths(recorded, recorded.get("graph"))
    check_inputs(run["run_id"], recorded.get("fingerprints") or {}, paths, "indexed")
    files = _input_files(root, dataset, run)
    fingerprint = _fingerprint(run, files, settings)
    folder = index_dir(root, dataset)
    current = read_manifest(root, dataset)
    if current is not None and current.get("fingerprint") == fingerprint:
        log(f"index of {dataset!r} is up to date (champion {run['run_id']})")
        seconds = time.perf_counter() - started
        return IndexBuild(current, False, seconds, folder_size(folder), folder)

    log(f"indexing {dataset!r} with champion {run['run_id']}")
    trained = load_two_branch(files["checkpoint"], device, text_encoder=files["text_encoder"])
    config, encoders = trained.config, trained.text_encoders
    assert encoders is not None
    image_dim = read_schema(files["image_features"]).field("feature").type.list_size
    text_dim = read_schema(files["text_features"]).field("feature").type.list_size
    trained.check_feature_dims(image_dim, text_dim)
    captions = load_dataset_table(root, dataset, "captions").set_index("caption_id")["text"]
    verify_text_encoder(encoders, str(files["text_features"]), captions)
    images = load_dataset_table(root, dataset, "images").set_index("image_id")["path"]
    # Stored relative to the data root, resolved when the index is opened (relocatable).
    paths = images.map(lambda path: relative_to_root(root, path) if isinstance(path, str) else path)
    parts = [
        _Part(
            "images",
            str(files["image_features"]),
            trained.embed_images,
            {
                "image_id": lambda ids: ids["image_id"].to_numpy(),
                "split": lambda ids: ids["split"].to_numpy(),
                "path": lambda ids: paths.reindex(ids["image_id"]).fillna("").to_numpy(),
            },
        ),
        _Part(
            "captions",
            str(files["text_features"]),
            trained.embed_texts,
            {
                "caption_id": lambda ids: ids["caption_id"].to_numpy(),
                "image_id": lambda ids: ids["image_id"].to_numpy(),
                "split": lambda ids: ids["split"].to_numpy(),
                "text": lambda ids: captions.reindex(ids["caption_id"]).fillna("").to_numpy(),
            },
        ),
    ]
    with staging_folder(root, f"index-{dataset}") as staging:
        fresh = staging / "new"
        fresh.mkdir()
        built = {
            part.name: _build_part(
                part,
                fresh,
                settings,
                config.embed_dim,
                None if progress is None else progress(f"index {part.name}"),
            )
            for part in parts
        }
        shutil.copy2(files["text_encoder"], fresh / TEXT_ENCODER)
        with atomic_path(fresh / TEXT_BRANCH) as tmp:
            trained.network.text_branch.to_arrays().save(tmp)
        manifest = {
            "format": INDEX_FORMAT,
            "dataset": dataset,
            "run_id": run["run_id"],
            "val_score": float(run["best_val_score"]),
            "checkpoint": relative_to_root(root, files["checkpoint"]),
            "image_features": relative_to_root(root, files["image_features"]),
            "text_features": relative_to_root(root, files["text_features"]),
            "image_extractor": image_extractor(files["image_features"]),
            "text_variant": encoders.variant,
            "embed_dim": config.embed_dim,
            "amp": config.amp,
            "settings": settings.model_dump(),
            "search_parameters": settings.search_parameters(),
            **built,
            "built_at": utc_now().isoformat(),
            "build_seconds": round(time.perf_counter() - started, 3),
            "fingerprint": fingerprint,
        }
        write_text_atomic(fresh / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        replace_directory(fresh, folder, staging / "previous")
    seconds = time.perf_counter() - started
    log(f"index of {dataset!r} built in {seconds:.1f}s")
    return IndexBuild(manifest, True, seconds, folder_size(folder), folder)
