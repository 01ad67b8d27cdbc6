"""ECCV Caption extended positives through the ``eccv-caption`` package, on a tiny fake of
its inputs: a COCO-like dataset of 8 test images whose ids and caption sentids play COCO's,
and ground truth (5K pool, original and extended positives) swapped for one over them.

What this does not exercise: the package's real annotations against a real Karpathy 5K test
(COCO cannot be downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ops.data.karpathy import sentence_ids
from ops.data.registry import add_dataset
from ops.evaluation import eccv_caption
from ops.evaluation.retrieval import evaluate_retrieval_runs, store_retrieval_results
from ops.evaluation.settings import RetrievalEvalSettings
from ops.evaluation.single_stage import split_embeddings
from ops.storage.sql import run_query
from ops.training.config import TrainConfig
from ops.training.inputs import image_sentence_splits
from ops.training.run import run_training
from ops.training.trained_model import load_two_branch
from tests.feature_files import write_graph_for, write_image_sentence_features

pytestmark = pytest.mark.usefixtures("one_thread")

FIRST_ID = {"train": 100, "val": 500, "test": 9000}
SPLITS = {"train": (60, 0), "val": (10, 1), "test": (8, 2)}
TINY = {"hidden_dim": 32, "embed_dim": 16, "batch_images": 30, "epochs": 2, "device": "cpu"}


def sentid(image: int, k: int) -> int:
    return 70_000 + 10 * image + k


def pool_images() -> list[int]:
    return [FIRST_ID["test"] + i for i in range(SPLITS["test"][0])]


# Extended positives: some images gain another image's captions, some captions more images.
EXTENDED_I2T = {
    9000: [sentid(9000, k) for k in range(5)] + [sentid(9003, 0), sentid(9005, 2)],
    9002: [sentid(9002, k) for k in range(5)],
    9006: [sentid(9006, k) for k in range(5)] + [sentid(9001, 4)],
}
EXTENDED_T2I = {
    sentid(9001, 0): [9001, 9004],
    sentid(9003, 2): [9003],
    sentid(9004, 1): [9004, 9000, 9007],
    sentid(9007, 3): [9007, 9002],
}


def _write_json(path: Path, document: dict) -> str:
    path.write_text(json.dumps({str(k): v for k, v in document.items()}))
    return str(path)


@pytest.fixture(scope="module")
def fake_metrics(tmp_path_factory: pytest.TempPathFactory):
    """The package's Metrics with its ground truth replaced by the fake 8-image pool."""
    pytest.importorskip("eccv_caption", reason="the eccv extra is not installed")
    metrics = eccv_caption.load_eccv_metrics()
    folder = tmp_path_factory.mktemp("eccv-gt")
    own_i2t = {i: [sentid(i, k) for k in range(5)] for i in pool_images()}
    own_t2i = {c: [i] for i, captions in own_i2t.items() for c in captions}
    metrics.set_coco_gts(
        _write_json(folder / "coco_i2t.json", own_i2t),
        _write_json(folder / "coco_t2i.json", own_t2i),
    )
    metrics.set_eccv_gts(
        _write_json(folder / "eccv_i2t.json", EXTENDED_I2T),
        _write_json(folder / "eccv_t2i.json", EXTENDED_T2I),
    )
    metrics.coco_ids = np.array(sorted(own_t2i))
    return metrics


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory: pytest.TempPathFactory):
    """A registered custom dataset whose Karpathy file has cocoids and sentids, and trained
    embedding and similarity runs on its feature files."""
    base = tmp_path_factory.mktemp("coco-like")
    root = base / "data"
    inputs = write_image_sentence_features(
        base / "features",
        SPLITS,
        image_name=lambda split, i: str(FIRST_ID[split] + i),
        caption_name=lambda split, j: f"{FIRST_ID[split] + j // 5}#{j % 5}",
    )
    folder = base / "coco"
    folder.mkdir()
    records = [
        {
            "filename": f"COCO_val2014_{image:012d}.jpg",
            "cocoid": image,
            "split": "test",
            "sentences": [{"raw": f"caption {k}", "sentid": sentid(image, k)} for k in range(5)],
        }
        for image in pool_images()
    ]
    (folder / "dataset_coco.json").write_text(json.dumps({"images": records}))
    add_dataset(root, "coco5k", "custom", folder)
    graph = write_graph_for(base / "graph", inputs)
    runs = {
        network: run_training(
            root, "coco5k", inputs, TrainConfig(network=network, **TINY), graph
        ).manifest
        for network in ("embedding", "similarity")
    }
    return root, runs


def _reference(scores: torch.Tensor, truth: dict[int, list[int]], rows: dict, names) -> dict:
    """R@1, R-Precision and mAP@R (percent) of full stable rankings, from the definitions."""
    r1, r_precision, map_at_r = [], [], []
    for query, positives in truth.items():
        row = scores[rows[query]].numpy().astype(np.float64)
        order = np.lexsort((np.arange(len(row)), -row))
        relevant = np.isin(np.asarray(names)[order], positives)
        r = len(positives)
        precision = np.cumsum(relevant[:r]) / np.arange(1, r + 1)
        r1.append(relevant[0])
        r_precision.append(relevant[:r].mean())
        map_at_r.append((precision * relevant[:r]).sum() / r)
    return {
        "r1": 100 * np.mean(r1),
        "r_precision": 100 * np.mean(r_precision),
        "map_at_r": 100 * np.mean(map_at_r),
    }


def test_karpathy_sentids_name_the_captions_by_their_loader_ids(coco_like) -> None:
    root, _ = coco_like
    mapping = sentence_ids(root.parent / "coco" / "dataset_coco.json", "test")
    assert len(mapping) == 40 and mapping["9003#2"] == sentid(9003, 2)


def test_the_package_scores_the_embedding_rankings(coco_like, fake_metrics) -> None:
    root, runs = coco_like
    embedding = runs["embedding"]
    outcome = eccv_caption.eccv_caption_evaluation(root, embedding, "test", "cpu", fake_metrics)
    assert outcome.note == "computed for 3 image and 4 caption queries"
    rows = {row["direction"]: row for row in outcome.rows}
    assert set(rows) == {"i2t", "t2i"} and rows["i2t"]["protocol"] == "eccv_caption"

    split = image_sentence_splits(
        embedding.features["image_features"], embedding.features["text_features"], ("test",)
    )["test"]
    trained = load_two_branch(embedding.checkpoint, "cpu")
    image_emb, text_emb = split_embeddings(trained, split)
    image_ids = [int(i) for i in split.image_ids]
    caption_ids = [sentid(int(c.split("#")[0]), int(c.split("#")[1])) for c in split.caption_ids]
    expected = {
        "i2t": _reference(
            image_emb @ text_emb.T,
            EXTENDED_I2T,
            {image: row for row, image in enumerate(image_ids)},
            caption_ids,
        ),
        "t2i": _reference(
            text_emb @ image_emb.T,
            EXTENDED_T2I,
            {caption: row for row, caption in enumerate(caption_ids)},
            image_ids,
        ),
    }
    for direction, want in expected.items():
        for name, value in want.items():
            assert rows[direction][name] == pytest.approx(value, abs=1e-6), (direction, name)
        assert np.isnan(rows[direction]["r5"]) and np.isnan(rows[direction]["rsum"])


def test_the_rows_are_stored_as_their_own_protocol(coco_like, fake_metrics) -> None:
    root, runs = coco_like
    result = evaluate_retrieval_runs(
        runs["embedding"], runs["similarity"], RetrievalEvalSettings(rerank_k=0), device="cpu"
    )
    outcome = eccv_caption.eccv_caption_evaluation(
        root, runs["embedding"], "test", "cpu", fake_metrics
    )
    combined = eccv_caption.with_eccv_rows(result, runs["embedding"], outcome)
    assert set(combined.summary["protocol"]) == {"all", "eccv_caption"}
    store_retrieval_results(root, combined)
    stored = run_query(
        root,
        "SELECT run_id, method, direction, r1, r5, r10, rsum, r_precision, map_at_r "
        "FROM retrieval_metrics WHERE protocol = 'eccv_caption' ORDER BY direction",
    )
    assert stored["run_id"].tolist() == [runs["embedding"].run_id] * 2
    assert stored["direction"].tolist() == ["i2t", "t2i"]
    assert stored[["r5", "r10", "rsum"]].isna().all().all()
    rows = {row["direction"]: row for row in outcome.rows}
    assert stored["r_precision"].tolist() == [
        rows["i2t"]["r_precision"],
        rows["t2i"]["r_precision"],
    ]


def test_other_test_sets_and_missing_package_are_skipped_with_the_reason(
    coco_like, fake_metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, runs = coco_like
    embedding = runs["embedding"]
    monkeypatch.setattr(fake_metrics, "coco_ids", fake_metrics.coco_ids[:-5])  # an image fewer
    outcome = eccv_caption.eccv_caption_evaluation(root, embedding, "test", "cpu", fake_metrics)
    assert outcome.rows == []
    assert outcome.note == "not computed: the test split of 'coco5k' is not the Karpathy 5K test"
    monkeypatch.setattr(eccv_caption, "load_eccv_metrics", lambda: None)
    outcome = eccv_caption.eccv_caption_evaluation(root, embedding, "test", "cpu")
    assert outcome.rows == [] and "pip install -e '.[eccv]'" in outcome.note
