"""The neighborhood graph, built for real by its asset on a tiny synthetic dataset, and the
training data that is read from it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ops.data.dataset_store import load_dataset_table
from ops.geometry import pairwise_iou
from ops.graph.build import nearest_neighbors
from ops.graph.store import read_relation
from ops.metrics.grounding import evaluate_grounding
from ops.metrics.proposal_coverage import proposal_upper_bound
from ops.storage.sql import run_query
from ops.training.batch_plans import BatchPlan
from ops.training.config import TrainConfig
from ops.training.inputs import phrase_region_splits
from ops.training.phrase_batches import PhraseBatchSampler
from ops.training.run import load_training_splits
from tests.pipeline_helpers import FEATURE_ASSETS, materialize

UPSTREAM = FEATURE_ASSETS
KNN_K = 3


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("graph")
    with dg.instance_for_test() as instance:
        result = materialize(
            [*UPSTREAM, "neighborhood_graph"],
            root,
            {"neighborhood_graph": {"knn_k": KNN_K}, "region_proposals": {"num_proposals": 30}},
            instance,
        )
        outputs = {name: result.output_for_node(name) for name in UPSTREAM[4:]}
        outputs["neighborhood_graph"] = result.output_for_node("neighborhood_graph")
        metadata = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
        yield root, outputs, metadata


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    return {name: load_dataset_table(root, "synthetic", name) for name in ("captions", "phrases")}


def test_the_graph_holds_training_ids_only(built) -> None:
    root, outputs, _ = built
    tables = _tables(root)
    captions, phrases = tables["captions"], tables["phrases"]
    train_images = set(captions.loc[captions["split"] == "train", "image_id"])
    train_captions = set(captions.loc[captions["split"] == "train", "caption_id"])
    train_phrases = set(phrases.loc[phrases["split"] == "train", "phrase_id"])
    regions = pd.read_parquet(outputs["region_proposals"].path)
    train_regions = set(regions.loc[regions["image_id"].isin(train_images), "region_id"])
    expected = {
        "image_sentence": (train_images, train_captions),
        "sentence_sentence": (train_captions, train_captions),
        "phrase_region": (train_phrases, train_regions),
        "region_region": (train_regions, train_regions),
        "knn_image": (train_images, train_images),
        "knn_sentence": (train_captions, train_captions),
    }
    edges = run_query(root, "SELECT relation, source_id, target_id FROM neighbors")
    assert set(edges["relation"]) == set(expected)
    for relation, (sources, targets) in expected.items():
        part = edges[edges["relation"] == relation]
        assert set(part["source_id"]) <= sources, relation
        assert set(part["target_id"]) <= targets, relation
    # Every training caption is linked to its image; no validation or test item is anywhere.
    pairs = edges[edges["relation"] == "image_sentence"]
    train = captions[captions["split"] == "train"]
    assert set(zip(pairs["source_id"], pairs["target_id"], strict=True)) == set(
        zip(train["image_id"], train["caption_id"], strict=True)
    )
    held_out = set(captions.loc[captions["split"] != "train", "image_id"])
    assert not held_out & (set(edges["source_id"]) | set(edges["target_id"]))


def test_degrees_knn_and_the_asset_metadata(built) -> None:
    root, outputs, metadata = built
    graph = outputs["neighborhood_graph"]
    counts = run_query(root, "SELECT relation, count(*) AS n FROM neighbors GROUP BY relation")
    assert dict(zip(counts["relation"], counts["n"], strict=True)) == graph.edges
    knn = read_relation(graph.path, "knn_sentence")
    assert (knn.groupby("source_id").size() == KNN_K).all()
    assert (knn["source_id"] != knn["target_id"]).all()
    assert (knn["weight"] <= 1.0 + 1e-6).all()
    values = metadata["neighborhood_graph"]
    assert values["degree_histogram"].value.startswith("![plot](data:image/png;base64,")
    degrees = values["degrees"].value
    assert degrees["sentence_sentence"] == {"sources": 300, "min": 4.0, "mean": 4.0, "max": 4.0}
    assert degrees["knn_image"]["min"] == degrees["knn_image"]["max"] == KNN_K
    assert values["knn_search"].value == {"knn_image": "exact", "knn_sentence": "exact"}
    assert values["rows"].value == sum(graph.edges.values())
    assert graph.settings == {"positive_iou": 0.6, "knn_k": KNN_K, "knn_faiss_min_items": 20000}


def _inputs(outputs: dict, task: str) -> dict[str, str]:
    if task == "image_sentence":
        return {name: outputs[name].path for name in ("image_features", "text_features")}
    names = ("region_features", "region_proposals", "phrase_features")
    return {name: outputs[name].path for name in names}


def test_the_positives_the_trainer_uses_are_the_graphs(built) -> None:
    root, outputs, _ = built
    graph = outputs["neighborhood_graph"]
    config = TrainConfig(batch_images=20, knn_sentence_neighbors=True)
    train = load_training_splits(
        config, _inputs(outputs, "image_sentence"), graph, root, "synthetic"
    )["train"]
    used = set(zip(train.image_ids[train.data.caption_image], train.caption_ids, strict=True))
    edges = read_relation(graph.path, "image_sentence")
    assert used == set(zip(edges["source_id"], edges["target_id"], strict=True))
    plan = BatchPlan(config, train.data)
    plan.set_epoch(1)
    neighbor_pairs = set()
    for batch in plan:
        batch_images = train.image_ids[batch.image_rows[batch.text_image]]
        assert set(zip(batch_images, train.caption_ids[batch.text_rows], strict=True)) <= used
        anchors, neighbors = batch.text_neighbors
        neighbor_pairs |= set(
            zip(
                train.caption_ids[batch.text_rows[anchors]],
                train.caption_ids[batch.text_rows[neighbors]],
                strict=True,
            )
        )
    knn = read_relation(graph.path, "knn_sentence")
    assert neighbor_pairs and neighbor_pairs <= set(
        zip(knn["source_id"], knn["target_id"], strict=True)
    )

    phrase_config = TrainConfig(task="phrase_region", phrases_per_batch=30)
    phrase_train = load_training_splits(
        phrase_config, _inputs(outputs, "phrase_region"), graph, root, "synthetic"
    )["train"]
    sampler = PhraseBatchSampler(phrase_train.data, phrases_per_batch=30)
    positives = set()
    for batch in sampler:
        rows, cols = np.nonzero(batch.positive)
        positives |= set(
            zip(
                phrase_train.phrase_ids[batch.phrase_idx[rows]],
                phrase_train.region_ids[batch.region_idx[cols]],
                strict=True,
            )
        )
        assert not (batch.positive & batch.negative).any()
    edges = read_relation(graph.path, "phrase_region")
    assert positives == set(zip(edges["source_id"], edges["target_id"], strict=True))


def test_faiss_and_exact_search_find_the_same_neighbors() -> None:
    features = np.random.default_rng(0).normal(size=(400, 24)).astype(np.float32)
    exact = list(nearest_neighbors(features, 6, faiss_min_items=10_000, chunk=128))
    faiss = list(nearest_neighbors(features, 6, faiss_min_items=1, chunk=128))
    exact_rows = np.concatenate([rows for rows, _, _ in exact])
    np.testing.assert_array_equal(exact_rows, np.arange(400))
    np.testing.assert_array_equal(
        np.vstack([n for _, n, _ in exact]), np.vstack([n for _, n, _ in faiss])
    )
    np.testing.assert_allclose(
        np.vstack([s for _, _, s in exact]), np.vstack([s for _, _, s in faiss]), atol=1e-5
    )
    neighbors = np.vstack([n for _, n, _ in exact])
    assert not (neighbors == np.arange(400)[:, None]).any()  # never itself
    # By hand: the most similar other row by cosine similarity.
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_array_equal(neighbors[:, 0], similarity.argmax(axis=1))
    # k beyond the other rows: every other row, by either path.
    for threshold in (1, 10_000):
        ((_, few, _),) = nearest_neighbors(features[:4], 10, faiss_min_items=threshold)
        assert few.shape == (4, 3)
        assert all(sorted(row) == [j for j in range(4) if j != i] for i, row in enumerate(few))


def test_localization_scores_exactly_n_candidates_and_bounds_over_those(built) -> None:
    root, outputs, _ = built
    proposals = pd.read_parquet(outputs["region_proposals"].path)
    candidates = proposals[proposals["source"] == "proposal"]
    assert (candidates.groupby("image_id").size() == 30).all()
    phrases = load_dataset_table(root, "synthetic", "phrases")
    test = phrase_region_splits(
        outputs["region_features"].path,
        proposals,
        outputs["phrase_features"].path,
        phrases,
        ("test",),
    )["test"]
    # Chain numbers: equal exactly when the phrases name the same entity of the same image.
    keys = phrases.set_index("phrase_id").loc[test.phrase_ids, ["image_id", "chain_id"]]
    entity = [tuple(pair) for pair in keys.to_numpy()]
    chain = test.data.phrase_chain
    assert chain.size == len(entity)
    same = chain[:, None] == chain[None, :]
    assert same.tolist() == [[a == b for b in entity] for a in entity]
    # What localization scores: the 30 candidates of each test image, no ground-truth box.
    test_candidates = candidates[candidates["image_id"].isin(set(test.image_ids))]
    assert sorted(test.region_ids) == sorted(test_candidates["region_id"])
    evaluated = phrases[phrases["phrase_id"].isin(set(test.phrase_ids))]
    covered = [
        pairwise_iou(
            [row[["gt_x1", "gt_y1", "gt_x2", "gt_y2"]].to_numpy(float)],
            test_candidates.loc[
                test_candidates["image_id"] == row["image_id"], ["x1", "y1", "x2", "y2"]
            ].to_numpy(float),
        ).max()
        >= 0.5
        for _, row in evaluated.iterrows()
    ]
    by_hand = 100.0 * float(np.mean(covered))
    bound = proposal_upper_bound(evaluated, proposals).set_index("split")
    assert 100.0 * bound.loc["test", "upper_bound"] == pytest.approx(by_hand)
    grounding = evaluate_grounding(
        evaluated, test_candidates, chosen_region=pd.Series(dtype=object)
    )
    assert grounding.summary["upper_bound"] == pytest.approx(by_hand)
    assert 0 < by_hand < 100
