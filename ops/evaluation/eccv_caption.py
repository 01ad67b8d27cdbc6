"""ECCV Caption extended positives for COCO's Karpathy 5K test (Chun et al., ECCV 2022).

COCO pairs each caption with one image and each image with its own five captions, although
many other images and captions match too. ECCV Caption adds machine- and human-verified
positives for 1,332 query images and 1,261 query captions of the Karpathy 5K test; its
``eccv-caption`` package (an optional extra: ``pip install -e '.[eccv]'``) ships them and
scores ranked lists with R@1, R-Precision and mAP@R. Here the embedding network's ranked lists
over the whole 5K test are handed to that package, and its scores are stored as rows of
``retrieval_metrics`` with ``protocol = 'eccv_caption'`` (percent; r5, r10, ranks and R-sum NULL).

It applies when the evaluated split is exactly the Karpathy 5K test (the package's 5,000
images and 25,000 caption annotation ids), whatever the dataset was registered as; the caption
ids come from the dataset's Karpathy file, whose ``sentid`` is COCO's annotation id.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ops.data.custom import custom_dataset_json
from ops.data.karpathy import sentence_ids
from ops.data.registry import load_registry
from ops.evaluation.retrieval import RetrievalEvalResult
from ops.evaluation.single_stage import split_embeddings
from ops.handoffs import TrainedModel
from ops.storage.paths import raw_dir
from ops.training.inputs import image_sentence_splits
from ops.training.trained_model import load_two_branch

PROTOCOL = "eccv_caption"
TARGETS = ("eccv_r1", "eccv_map_at_r", "eccv_rprecision")
QUERY_CHUNK = 256  # queries scored against every candidate at once


@dataclass(frozen=True)
class EccvOutcome:
    rows: list[dict[str, Any]]  # retrieval_metrics rows (without run, dataset, split, method)
    note: str  # what was computed, or why nothing was


def load_eccv_metrics() -> Any | None:
    """The package's ``Metrics`` (its ground truth loaded), or None when not installed."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # it warns when ujson is missing
            from eccv_caption import Metrics
    except ImportError:
        return None
    return Metrics()


def karpathy_file(root: Path, dataset: str) -> Path | None:
    """The Karpathy-style file the dataset's tables were parsed from, where one exists."""
    entry = load_registry(root).get(dataset)
    if entry is None:
        return None
    if entry.source == "custom" and entry.path:
        return custom_dataset_json(Path(entry.path))
    names = {"coco": "dataset_coco.json", "coco_official": "dataset_coco_official.json"}
    if entry.source not in names:
        return None
    found = sorted(raw_dir(root, dataset).rglob(names[entry.source]))
    return found[0] if found else None


def karpathy_5k_pool(metrics: Any) -> tuple[set[int], set[int]]:
    """The 5K test the package's ground truth is defined on: (image ids, caption ids)."""
    captions = {int(c) for c in metrics.coco_ids}
    images = {int(image) for c in captions for image in metrics.coco_gts["t2i"][c]}
    return images, captions


def _ranked(
    queries: torch.Tensor, candidates: torch.Tensor, k: int, names: np.ndarray
) -> list[list[int]]:
    lists: list[list[int]] = []
    for start in range(0, len(queries), QUERY_CHUNK):
        scores = queries[start : start + QUERY_CHUNK] @ candidates.T
        top = scores.topk(min(k, candidates.shape[0]), dim=1).indices.cpu().numpy()
        lists += [[int(n) for n in names[row]] for row in top]
    return lists


def eccv_rows(
    image_ids: np.ndarray,
    caption_ids: np.ndarray,
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    metrics: Any,
) -> list[dict[str, Any]]:
    """The package's ECCV R@1, R-Precision and mAP@R (percent) of the embeddings' rankings
    over the whole test; ``image_ids``/``caption_ids`` are COCO's integer ids of the rows."""
    image_row = {int(i): row for row, i in enumerate(image_ids)}
    caption_row = {int(c): row for row, c in enumerate(caption_ids)}
    truth = metrics.eccv_gts
    k_i2t = max(len(v) for v in truth["i2t"].values())
    k_t2i = max(len(v) for v in truth["t2i"].values())
    i2t_queries = sorted(truth["i2t"])
    t2i_queries = sorted(truth["t2i"])
    i2t = _ranked(
        image_emb[torch.as_tensor([image_row[q] for q in i2t_queries])],
        text_emb,
        k_i2t,
        np.asarray(caption_ids),
    )
    t2i = _ranked(
        text_emb[torch.as_tensor([caption_row[q] for q in t2i_queries])],
        image_emb,
        k_t2i,
        np.asarray(image_ids),
    )
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        scores = metrics.compute_all_metrics(
            dict(zip(i2t_queries, i2t, strict=True)),
            dict(zip(t2i_queries, t2i, strict=True)),
            target_metrics=TARGETS,
            verbose=False,
        )
    return [
        {
            "protocol": PROTOCOL,
            "fold": 0,
            "direction": direction,
            "r1": 100.0 * float(scores["eccv_r1"][direction]),
            "r5": np.nan,
            "r10": np.nan,
            "median_rank": np.nan,
            "mean_rank": np.nan,
            "rsum": np.nan,
            "r_precision": 100.0 * float(scores["eccv_rprecision"][direction]),
            "map_at_r": 100.0 * float(scores["eccv_map_at_r"][direction]),
        }
        for direction in ("i2t", "t2i")
    ]


def coco_ids(
    root: Path, dataset: str, image_ids: np.ndarray, caption_ids: np.ndarray, split: str
) -> tuple[np.ndarray, np.ndarray] | str:
    """COCO's integer ids of the split's images and captions, or why there are none."""
    if not all(str(i).isdigit() for i in image_ids):
        return "its image ids are not COCO ids"
    source = karpathy_file(root, dataset)
    if source is None:
        return "it was not parsed from a Karpathy-style COCO file"
    sentids = sentence_ids(source, split)
    mapped = [sentids.get(str(c)) for c in caption_ids]
    if any(not isinstance(s, int) for s in mapped):
        return f"{source} does not give every {split} caption an integer sentid"
    return np.asarray([int(i) for i in image_ids]), np.asarray(mapped)


def eccv_caption_evaluation(
    root: Path,
    embedding_run: TrainedModel,
    split_name: str = "test",
    device: str = "auto",
    metrics: Any | None = None,
) -> EccvOutcome:
    """ECCV Caption rows for the embedding run on ``split_name``, or none with the reason."""
    dataset = embedding_run.dataset
    features = embedding_run.features
    split = image_sentence_splits(
        features["image_features"], features["text_features"], (split_name,)
    ).get(split_name)
    if split is None:
        return EccvOutcome([], f"not computed: {dataset!r} has no {split_name} split")
    ids = coco_ids(root, dataset, split.image_ids, split.caption_ids, split_name)
    if isinstance(ids, str):
        return EccvOutcome([], f"not computed: {dataset!r} is not COCO ({ids})")
    metrics = metrics if metrics is not None else load_eccv_metrics()
    if metrics is None:
        return EccvOutcome([], "not computed: install the eccv extra (pip install -e '.[eccv]')")
    images, captions = karpathy_5k_pool(metrics)
    if set(ids[0].tolist()) != images or set(ids[1].tolist()) != captions:
        return EccvOutcome(
            [], f"not computed: the {split_name} split of {dataset!r} is not the Karpathy 5K test"
        )
    image_emb, text_emb = split_embeddings(load_two_branch(embedding_run.checkpoint, device), split)
    rows = eccv_rows(ids[0], ids[1], image_emb, text_emb, metrics)
    queries = f"{len(metrics.eccv_gts['i2t'])} image and {len(metrics.eccv_gts['t2i'])} caption"
    return EccvOutcome(rows, f"computed for {queries} queries")


def with_eccv_rows(
    result: RetrievalEvalResult, embedding_run: TrainedModel, outcome: EccvOutcome
) -> RetrievalEvalResult:
    """``result`` with the ECCV rows added to the embedding run's metrics and the summary."""
    if not outcome.rows:
        return result
    run_id = embedding_run.run_id
    ids = {"run_id": run_id, "dataset": result.dataset, "split": result.split}
    rows = pd.DataFrame([ids | {"method": "single_stage"} | row for row in outcome.rows])
    metrics = dict(result.metrics)
    metrics[run_id] = pd.concat([metrics[run_id], rows], ignore_index=True)
    summary_rows = rows.assign(network=embedding_run.network)[result.summary.columns]
    summary = pd.concat([result.summary, summary_rows], ignore_index=True)
    return dataclasses.replace(result, metrics=metrics, summary=summary)
