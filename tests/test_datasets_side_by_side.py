"""Several datasets in one data root and one Dagster instance, each its own partition."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ops.handoffs import PublishedTables, Skipped
from ops.storage.sql import run_query
from tests.karpathy_folder import write_karpathy_folder
from tests.pipeline_helpers import ALL_KEYS, TRAINED, materialize, register_custom

UP_TO_FEATURES = [
    "raw_dataset",
    "images",
    "captions",
    "phrases",
    "image_features",
    "word_vectors",
    "text_features",
    "phrase_features",
]


TINY = {
    name: {"epochs": 2, "batch_images": 20, "hidden_dim": 32, "embed_dim": 16} for name in TRAINED
}
PHRASE_ASSETS = [
    "phrase_features",
    "region_proposals",
    "region_features",
    *TRAINED[2:],
    "localization_eval",
]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("side_by_side")
    root = tmp / "data"
    photos = register_custom(root, write_karpathy_folder(tmp / "photos"), name="photos")
    with dg.instance_for_test() as instance:
        first = materialize(UP_TO_FEATURES, root, instance=instance)
        # The whole pipeline, as `full_pipeline` runs it, on the phrase-less dataset.
        second = materialize(ALL_KEYS, root, TINY, instance=instance, dataset=photos)
        yield root, instance, first, second


def test_both_datasets_stay_materialized(two_datasets) -> None:
    _, instance, first, second = two_datasets
    assert first.success and second.success
    for asset in UP_TO_FEATURES:
        partitions = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert partitions == {"synthetic", "photos"}, asset
    for asset in set(ALL_KEYS) - set(UP_TO_FEATURES):
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"photos"}, asset


def test_the_second_run_materializes_only_its_own_partition(two_datasets) -> None:
    _, _, first, second = two_datasets
    assert {e.partition for e in first.get_asset_materialization_events()} == {"synthetic"}
    assert {e.partition for e in second.get_asset_materialization_events()} == {"photos"}
    # Each run ran every step once: the second did not redo the first dataset's work.
    steps = [e.step_key for e in second.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert len(steps) == len(set(steps))


def test_files_and_rows_sit_side_by_side(two_datasets) -> None:
    root, _, _, _ = two_datasets
    counts = run_query(
        root,
        "SELECT dataset, split, count(*) AS n FROM images GROUP BY ALL ORDER BY dataset, split",
    )
    assert counts.values.tolist() == [
        ["photos", "test", 10],
        ["photos", "train", 40],
        ["photos", "val", 10],
        ["synthetic", "test", 12],
        ["synthetic", "train", 60],
        ["synthetic", "val", 12],
    ]
    captions = run_query(root, "SELECT dataset, count(*) AS n FROM captions GROUP BY 1 ORDER BY 1")
    assert captions.values.tolist() == [["photos", 300], ["synthetic", 420]]
    for dataset in ("photos", "synthetic"):
        assert len(list((root / "features" / dataset).glob("image_*.parquet"))) == 1
        assert len(list((root / "features" / dataset).glob("text_*.parquet"))) == 1


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.get_asset_materialization_events()
    return next(e.materialization.metadata for e in events if e.asset_key.path == [asset])


def test_a_dataset_without_phrase_boxes_runs_the_whole_pipeline(two_datasets) -> None:
    root, _, first, second = two_datasets
    materialized = {e.asset_key.to_user_string() for e in second.get_asset_materialization_events()}
    assert materialized == set(ALL_KEYS)
    reason = "no phrase annotations in photos"
    skipped = Skipped(dataset="photos", reason=reason)
    # Each phrase asset hands the reason on as a typed value, and shows it in the UI.
    assert second.output_for_node("dataset_tables", "phrases") == skipped
    for asset in PHRASE_ASSETS:
        assert second.output_for_node(asset) == skipped, asset
    for asset in ["phrases", *PHRASE_ASSETS]:
        assert _metadata(second, asset)["skipped"].value == reason, asset
    assert "skipped" not in _metadata(first, "phrases")
    phrases = first.output_for_node("dataset_tables", "phrases")
    assert isinstance(phrases, PublishedTables) and phrases.dataset == "synthetic"
    checks = {e.check_name: e for e in second.get_asset_check_evaluations()}
    for check in ("phrase_features_valid", "region_features_valid", "localization_above_random"):
        assert checks[check].passed and reason in checks[check].description, check
    # The retrieval half trained and was scored; the phrase half left no rows.
    runs = run_query(root, "SELECT task, network, dataset, status FROM training_runs ORDER BY 2")
    assert runs.values.tolist() == [
        ["image_sentence", "embedding", "photos", "finished"],
        ["image_sentence", "similarity", "photos", "finished"],
    ]
    recalls = run_query(
        root,
        "SELECT DISTINCT m.dataset, m.split FROM retrieval_metrics m "
        "JOIN training_runs USING (run_id)",
    )
    assert recalls.values.tolist() == [["photos", "test"]]
    assert run_query(root, "SELECT count(*) AS n FROM localization_metrics")["n"][0] == 0
    report = Path(second.output_for_node("report").path).read_text()
    assert "Retrieval (this run)" in report and "Phrase localization" not in report
    assert "Grounding" not in report
