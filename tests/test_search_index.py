"""The retrieval index follows the champion: kept while it is current, rebuilt by a training
run that becomes champion, and reported stale when a champion was trained without it."""

from __future__ import annotations

import dagster as dg
import pytest

from ops.cli import main
from ops.search.engine import open_index, search_text
from tests.karpathy_folder import write_karpathy_folder
from tests.pipeline_helpers import FEATURE_ASSETS, materialize, register_custom

UPSTREAM = [*FEATURE_ASSETS, "neighborhood_graph"]
NET = "image_sentence_embedding_net"
SMALL = {"batch_images": 10, "hidden_dim": 64, "embed_dim": 32}
# Runs are seeded and reproducible on CPU: the barely trained first model validates at an
# R-sum near 278, the trained ones well above (about 332 and 392), so each becomes champion.
BARELY_TRAINED = SMALL | {"epochs": 1, "lr": 1e-7}
TRAINED = SMALL | {"epochs": 6, "lr": 1e-3}


def _index_events(result: dg.ExecuteInJobResult) -> dict:
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "retrieval_index"
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("search-index")
    root = base / "data"
    root.mkdir()
    name = register_custom(root, write_karpathy_folder(base / "photos"), "photos")
    with dg.instance_for_test() as instance:
        first = materialize(
            [*UPSTREAM, NET, "retrieval_index"], root, {NET: BARELY_TRAINED}, instance, dataset=name
        )
        yield root, name, instance, first


def test_the_index_is_rebuilt_for_a_new_champion_and_kept_otherwise(photos, capsys) -> None:
    root, name, instance, first = photos
    weak = first.output_for_node(NET)
    built = _index_events(first)
    assert weak.champion and built["champion_run_id"].value == weak.run_id
    assert built["rebuilt"].value is True and built["index_type"].value == "flat"
    assert built["images"].value == 60 and built["captions"].value == 300
    before = search_text(open_index(root, name, "cpu"), ["a red star"], k=3)[0].hits

    # Nothing changed: the index on disk is kept.
    again = _index_events(materialize(["retrieval_index"], root, instance=instance, dataset=name))
    assert again["rebuilt"].value is False and again["champion_run_id"].value == weak.run_id

    # A better model becomes champion in a training job: that job rebuilds the index with it.
    second = materialize([NET, "retrieval_index"], root, {NET: TRAINED}, instance, dataset=name)
    strong = second.output_for_node(NET)
    assert strong.best_val_score > weak.best_val_score, "precondition: a better model"
    assert strong.champion
    rebuilt = _index_events(second)
    assert rebuilt["rebuilt"].value is True
    assert rebuilt["champion_run_id"].value == strong.run_id
    index = open_index(root, name, "cpu")
    assert index.manifest["run_id"] == strong.run_id and index.stale is None
    after = search_text(index, ["a red star"], k=3)[0].hits
    assert [h.score for h in after] != [h.score for h in before]

    # A champion trained without rebuilding the index: search still answers, and says so.
    third = materialize([NET], root, {NET: TRAINED | {"seed": 1}}, instance, dataset=name)
    assert third.output_for_node(NET).champion
    code = main(["--data-root", str(root), "search", "a red star", "--dataset", name])
    err = capsys.readouterr().err
    assert code == 0 and "warning" in err and "re-materialize retrieval_index" in err


def test_an_approximate_index_is_a_setting(photos) -> None:
    root, name, instance, _ = photos
    materialize(["retrieval_index"], root, instance=instance, dataset=name)
    query = ["a small blue circle"]
    flat = search_text(open_index(root, name, "cpu"), query, k=5)[0].hits
    result = materialize(
        ["retrieval_index"],
        root,
        {"retrieval_index": {"index_type": "hnsw", "hnsw_neighbors": 8}},
        instance,
        dataset=name,
    )
    assert _index_events(result)["index_type"].value == "hnsw"
    approximate = open_index(root, name, "cpu")
    assert approximate.manifest["search_parameters"] == {"efSearch": 128}
    hnsw = search_text(approximate, query, k=5)[0].hits
    # 60 images and a generous search: the graph finds the exact neighbours.
    assert [h.image_id for h in hnsw] == [h.image_id for h in flat]
