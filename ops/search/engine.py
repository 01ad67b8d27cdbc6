"""Asking a trained model: text → images and image → captions over a dataset's retrieval index.

>>> index = open_index(root, "synthetic")
>>> [result] = search_text(index, ["a red circle"], k=5, split="test")
>>> result.hits[0].image_id, result.hits[0].score

Everything a text query needs (encoder, text branch, faiss indexes, ids) is loaded once by
:func:`open_index`, so that many queries in one process pay for it once. A text query runs the
champion's text branch in numpy (``text_branch.npz``) and never imports torch; the network
itself is loaded, once, by the first image query.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from models.branch_arrays import BranchArrays
from ops.data.registry import DatasetRegistryError, load_registry
from ops.features.text.encoder_store import TextEncoderError, load_text_encoders
from ops.features.text.text_features import TextEncoders
from ops.search.encoding import encode_texts, extract_query_image
from ops.search.errors import SearchError
from ops.search.manifest import (
    NETWORK,
    TASK,
    TEXT_BRANCH,
    TEXT_ENCODER,
    no_model_message,
    read_manifest,
)
from ops.search.vectors import read_index, search
from ops.storage.parquet_io import read_table
from ops.storage.paths import index_dir, resolve_in_root
from ops.storage.run_records import current_champion

if TYPE_CHECKING:
    from ops.training.trained_model import TrainedTwoBranch

# Devices a text query can run on without torch deciding anything.
CPU_DEVICES = ("auto", "cpu")


@dataclass(frozen=True)
class ImageHit:
    rank: int
    image_id: str
    path: str
    score: float
    split: str
    captions: list[str]


@dataclass(frozen=True)
class CaptionHit:
    rank: int
    caption_id: str
    text: str
    image_id: str
    path: str
    score: float
    split: str


@dataclass(frozen=True)
class TextQueryResult:
    query: str
    hits: list[ImageHit]
    error: str | None = None  # why the query could not be answered (then no hits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageQueryResult:
    image: str
    hits: list[CaptionHit]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchIndex:
    """A dataset's retrieval index, loaded: row i of ``images``/``captions`` is faiss id i."""

    root: Path
    dataset: str
    manifest: dict[str, Any]
    images: pd.DataFrame  # image_id, split, path
    captions: pd.DataFrame  # caption_id, image_id, split, text
    image_index: faiss.Index
    caption_index: faiss.Index
    encoders: TextEncoders
    # The champion's text branch in numpy; None for an index built without it (then text
    # queries load the network like image queries).
    text_branch: BranchArrays | None
    device: str = "auto"
    stale: str | None = None  # set when the champion changed after the index was built
    _captions_of: dict[str, list[str]] | None = field(default=None, repr=False)
    _paths: dict[str, str] | None = field(default=None, repr=False)
    _model: TrainedTwoBranch | None = field(default=None, repr=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def captions_of(self, image_id: str) -> list[str]:
        if self._captions_of is None:
            grouped = self.captions.groupby("image_id", sort=False)["text"].agg(list)
            self._captions_of = grouped.to_dict()
        return self._captions_of.get(image_id, [])

    def image_path(self, image_id: str) -> str | None:
        """The path of an image in the index (None when it is not one of them)."""
        if self._paths is None:
            self._paths = dict(zip(self.images["image_id"], self.images["path"], strict=True))
        return self._paths.get(image_id)

    def id_range(self, side: str, split: str | None) -> tuple[int, int] | None:
        if split is None:
            return None
        ranges = self.manifest[side]["splits"]
        if split not in ranges:
            raise SearchError(
                f"split {split!r} is not in the index of {self.dataset!r} "
                f"(it has: {', '.join(ranges)})"
            )
        start, stop = ranges[split]
        return start, stop

    def candidates(self, side: str, split: str | None) -> int:
        """How many ``side`` items (``images`` or ``captions``) of ``split`` (None: all) a
        query is ranked against: the most hits a query can have."""
        id_range = self.id_range(side, split)
        if id_range is None:
            return len(self.images if side == "images" else self.captions)
        return id_range[1] - id_range[0]

    @property
    def model(self) -> TrainedTwoBranch:
        """The champion network, loaded through :func:`load_two_branch` on first use; a
        checkpoint that cannot be loaded is a SearchError naming it."""
        with self._model_lock:
            if self._model is None:
                from ops.training.checkpoint import CheckpointError
                from ops.training.trained_model import load_two_branch

                checkpoint = self.root / self.manifest["checkpoint"]
                try:
                    self._model = load_two_branch(checkpoint, self.device)
                except (CheckpointError, ValueError) as error:
                    raise SearchError(str(error)) from None
                except (OSError, RuntimeError, KeyError) as error:
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    raise SearchError(f"{checkpoint}: cannot load the network ({reason})") from None
            return self._model

    def embed_texts(self, features: np.ndarray) -> np.ndarray:
        if self.text_branch is not None:
            return self.text_branch.forward(features)
        return self.model.embed_texts(features)

    def embed_images(self, features: np.ndarray) -> np.ndarray:
        return self.model.embed_images(features)


def _registered(root: Path, dataset: str) -> None:
    try:
        registry = load_registry(root)
    except DatasetRegistryError as error:
        raise SearchError(str(error)) from None
    if dataset not in registry:
        raise SearchError(
            f"unknown dataset {dataset!r} (registered: {', '.join(sorted(registry))})"
        )


def _stale_note(root: Path, dataset: str, manifest: dict[str, Any]) -> str | None:
    champion = current_champion(root, TASK, NETWORK, dataset)
    if champion is None or champion["run_id"] == manifest["run_id"]:
        return None
    return (
        f"the index of {dataset!r} was built with run {manifest['run_id']}, but the champion is "
        f"now {champion['run_id']}: re-materialize retrieval_index"
    )


def _table(path: Path, columns: list[str]) -> pd.DataFrame:
    return read_table(path, columns)


def _resolved(root: Path, images: pd.DataFrame) -> pd.DataFrame:
    """Image paths stored relative to the data root, made usable where the root is now."""
    return images.assign(
        path=[resolve_in_root(root, p) if isinstance(p, str) else p for p in images["path"]]
    )


def open_index(root: str | Path, dataset: str, device: str = "auto") -> SearchIndex:
    """Load the retrieval index of a registered dataset, or a SearchError saying what is
    missing (the dataset, a trained model, the index)."""
    root = Path(root).resolve()
    _registered(root, dataset)
    manifest = read_manifest(root, dataset)
    if manifest is None:
        if current_champion(root, TASK, NETWORK, dataset) is None:
            raise SearchError(no_model_message(dataset))
        raise SearchError(
            f"no retrieval index for {dataset!r} yet: materialize retrieval_index for it "
            "(full_pipeline and retrain include it)"
        )
    folder = index_dir(root, dataset)
    if device not in CPU_DEVICES:
        # An accelerator was asked for: check it now, not at the first image query.
        from ops.device import resolve_device

        try:
            resolve_device(device)
        except ValueError as error:
            raise SearchError(str(error)) from None
    try:
        branch_file = folder / TEXT_BRANCH
        return SearchIndex(
            root=root,
            dataset=dataset,
            manifest=manifest,
            images=_resolved(
                root, _table(folder / "images.parquet", ["image_id", "split", "path"])
            ),
            captions=_table(
                folder / "captions.parquet", ["caption_id", "image_id", "split", "text"]
            ),
            image_index=read_index(folder / "images.faiss"),
            caption_index=read_index(folder / "captions.faiss"),
            encoders=load_text_encoders(folder / TEXT_ENCODER),
            text_branch=BranchArrays.load(branch_file) if branch_file.exists() else None,
            device=device,
            stale=_stale_note(root, dataset, manifest),
        )
    except TextEncoderError as error:
        raise SearchError(str(error)) from None
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        # A file of the index is missing or damaged.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SearchError(
            f"the retrieval index in {folder} cannot be read ({reason}); "
            "re-materialize retrieval_index"
        ) from None


# Up to this many queries run on one thread (see single_threaded).
FEW_QUERIES = 4


@functools.cache
def _blas() -> ThreadpoolController:
    """numpy's BLAS thread pools (found once: the lookup walks the loaded libraries)."""
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded(queries: int) -> Iterator[None]:
    """One BLAS, torch and faiss thread while answering a handful of queries: their matrices
    are too small to split, and waking a second thread costs more than it saves (on a busy
    machine tens of milliseconds; measured in benchmarks/bench_search.py). The thread counts
    are process-wide, so concurrent searches from several Python threads share the setting."""
    if queries > FEW_QUERIES:
        yield
        return
    torch = sys.modules.get("torch")  # only set when something here has loaded it
    torch_threads = torch.get_num_threads() if torch is not None else None
    faiss_threads = faiss.omp_get_max_threads()
    if torch is not None:
        torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        with _blas().limit(limits=1, user_api="blas"):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)


def _check_k(k: int, candidates: int) -> int:
    """``k`` capped at the candidates: faiss allocates k results per query whatever is
    indexed."""
    if k < 1:
        raise SearchError(f"k must be at least 1, got {k}")
    return max(1, min(int(k), candidates))


def search_text(
    index: SearchIndex, queries: Sequence[str], k: int = 10, split: str | None = None
) -> list[TextQueryResult]:
    """The ``k`` best images of ``split`` (None: every split; ``k`` at most the images there)
    for each text query, encoded as
    the training captions were. A query that cannot be encoded (empty, no known word) gets
    its ``error`` and no hits; the others are answered in one batch."""
    k = _check_k(k, index.candidates("images", split))
    id_range = index.id_range("images", split)
    features, problems = encode_texts(index.encoders, list(queries))
    answerable = [i for i, problem in enumerate(problems) if problem is None]
    hits: dict[int, list[ImageHit]] = {}
    if answerable:
        with single_threaded(len(answerable)):
            embeddings = index.embed_texts(features[answerable])
            scores, ids = search(
                index.image_index, embeddings, k, id_range, index.manifest["search_parameters"]
            )
        for query, row_scores, row_ids in zip(answerable, scores, ids, strict=True):
            hits[query] = [
                _image_hit(index, rank, int(item), float(score))
                for rank, (item, score) in enumerate(zip(row_ids, row_scores, strict=True), start=1)
                if item >= 0
            ]
    return [TextQueryResult(query, hits.get(i, []), problems[i]) for i, query in enumerate(queries)]


def _image_hit(index: SearchIndex, rank: int, row: int, score: float) -> ImageHit:
    image = index.images.iloc[row]
    return ImageHit(
        rank=rank,
        image_id=str(image["image_id"]),
        path=str(image["path"]),
        score=score,
        split=str(image["split"]),
        captions=index.captions_of(str(image["image_id"])),
    )


def search_image(
    index: SearchIndex, image: str | Path, k: int = 10, split: str | None = None
) -> ImageQueryResult:
    """The ``k`` best captions of ``split`` (None: every split; ``k`` at most the captions
    there) for an image file, whose CNN
    feature is extracted with the dataset's own backbone, weights and preprocessing."""
    k = _check_k(k, index.candidates("captions", split))
    id_range = index.id_range("captions", split)
    extractor = index.manifest["image_extractor"]
    if extractor is None:
        raise SearchError(
            f"dataset {index.manifest['dataset']!r} has precomputed image features: no CNN "
            "here makes vectors like them, so it answers text queries only"
        )
    features = extract_query_image(image, extractor, device=str(index.model.device))
    with single_threaded(1):
        embedding = index.embed_images(features)
        scores, ids = search(
            index.caption_index, embedding, k, id_range, index.manifest["search_parameters"]
        )
    paths = index.images.set_index("image_id")["path"]
    hits = []
    for rank, (item, score) in enumerate(zip(ids[0], scores[0], strict=True), start=1):
        if item < 0:
            continue
        caption = index.captions.iloc[int(item)]
        hits.append(
            CaptionHit(
                rank=rank,
                caption_id=str(caption["caption_id"]),
                text=str(caption["text"]),
                image_id=str(caption["image_id"]),
                path=str(paths.get(caption["image_id"], "")),
                score=float(score),
                split=str(caption["split"]),
            )
        )
    return ImageQueryResult(str(image), hits)
