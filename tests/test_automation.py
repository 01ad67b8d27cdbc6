"""Jobs, schedule, sensor and champion promotion, through Dagster's testing APIs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.automation import AUTOMATION_DATASETS_ENV, build_retrain_schedule, retrain_on_new_data
from assets.definitions import defs
from assets.deployment import retrain_cron_from_env
from assets.partitions import sync_dataset_partitions
from ops.storage.results_store import publish_catalogue, read_result
from ops.storage.run_records import current_champion, promote_if_better
from ops.storage.sql import run_query
from ops.storage.validation_scope import ValidationScope
from tests.hardening.custom_dataset import write_custom_dataset
from tests.pipeline_helpers import materialize, register_custom

DATA = ["raw_dataset", "images", "captions", "phrases"]


def test_definitions_load_with_every_job_schedule_and_sensor() -> None:
    repository = defs.get_repository_def()
    assert {j.name for j in repository.get_all_jobs()} >= {
        "full_pipeline",
        "retrain",
        "refresh_from_data",
    }
    retrain = defs.resolve_job_def("retrain")
    keys = {k.to_user_string() for k in retrain.asset_layer.executable_asset_keys}
    assert keys == {
        "image_sentence_embedding_net",
        "image_sentence_similarity_net",
        "phrase_region_embedding_net",
        "phrase_region_similarity_net",
        "retrieval_eval",
        "localization_eval",
        "report",
        "retrieval_index",
    }
    refresh = defs.resolve_job_def("refresh_from_data")
    refresh_keys = {k.to_user_string() for k in refresh.asset_layer.executable_asset_keys}
    assert "image_features" in refresh_keys and "captions" not in refresh_keys


def test_weekly_schedule_requests_one_retrain_run_per_dataset_and_starts_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retrain_schedule = build_retrain_schedule()
    assert retrain_schedule.cron_schedule == "0 3 * * 1"
    assert retrain_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert retrain_schedule.job_name == "retrain"
    with dg.instance_for_test() as instance:
        sync_dataset_partitions(instance, ["photos"])
        context = dg.build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=pd.Timestamp("2026-11-30 03:00", tz="UTC").to_pydatetime(),
        )
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            requests = retrain_schedule.evaluate_tick(context).run_requests
        assert sorted(r.partition_key for r in requests) == ["photos", "synthetic"]
        assert len({r.run_key for r in requests}) == 2
        # The setting narrows the datasets the schedule retrains.
        monkeypatch.setenv(AUTOMATION_DATASETS_ENV, "photos")
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            requests = retrain_schedule.evaluate_tick(context).run_requests
        assert [r.partition_key for r in requests] == ["photos"]


def _sensor_tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    # The daemon evaluates sensors with the instance as the store of dynamic partitions.
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        return retrain_on_new_data.evaluate_tick(context)


def test_sensor_retrains_a_dataset_only_when_its_data_changes(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance:
        sync_dataset_partitions(instance, [])
        first = _sensor_tick(instance, None)
        assert not first.run_requests and "synthetic: not materialized" in first.skip_message

        small = {
            "synthetic_train_images": 20,
            "synthetic_val_images": 4,
            "synthetic_test_images": 4,
            "synthetic_image_size": 32,
        }
        assert materialize(DATA, tmp_path / "a", {"raw_dataset": small}, instance).success
        recorded = _sensor_tick(instance, first.cursor)
        assert not recorded.run_requests and "synthetic: recorded" in recorded.skip_message
        cursor = recorded.cursor

        # The same data again: no retraining.
        assert materialize(DATA, tmp_path / "b", {"raw_dataset": small}, instance).success
        same = _sensor_tick(instance, cursor)
        assert not same.run_requests and "synthetic: not changed" in same.skip_message

        # Different data (another seed): one run of refresh_from_data, for that dataset.
        changed = {**small, "seed": 7}
        assert materialize(DATA, tmp_path / "c", {"raw_dataset": changed}, instance).success
        fired = _sensor_tick(instance, cursor)
        assert len(fired.run_requests) == 1
        assert fired.run_requests[0].tags["twobranch/trigger"] == "new-data"
        assert fired.run_requests[0].partition_key == "synthetic"
        assert fired.cursor != cursor
        assert not _sensor_tick(instance, fired.cursor).run_requests

        # A second dataset is recorded on its own; the first one's state is kept.
        root = tmp_path / "c"
        custom = register_custom(root, write_custom_dataset(tmp_path / "mine"))
        assert materialize(DATA, root, instance=instance, dataset=custom).success
        both = _sensor_tick(instance, fired.cursor)
        assert not both.run_requests
        assert "custom: recorded" in both.skip_message
        assert "synthetic: not changed" in both.skip_message


def test_champion_is_promoted_only_when_validation_improves(tmp_path: Path) -> None:
    key = ("image_sentence", "embedding", "synthetic")
    promoted, reason = promote_if_better(tmp_path, "run-a", *key, 150.0)
    assert promoted and "first model" in reason
    promoted, reason = promote_if_better(tmp_path, "run-b", *key, 140.0)
    assert not promoted and "does not beat" in reason
    assert current_champion(tmp_path, *key)["run_id"] == "run-a"
    promoted, reason = promote_if_better(tmp_path, "run-c", *key, 150.0)
    assert not promoted  # a tie keeps the champion
    promoted, reason = promote_if_better(tmp_path, "run-d", *key, 171.5)
    assert promoted and "beats champion run-a" in reason
    champion = current_champion(tmp_path, *key)
    assert champion["run_id"] == "run-d" and champion["previous_run_id"] == "run-a"
    # Another network keeps its own champion.
    assert promote_if_better(tmp_path, "run-s", "image_sentence", "similarity", "synthetic", 1.0)[0]
    publish_catalogue(tmp_path)
    champions = run_query(tmp_path, "SELECT network, run_id FROM champions ORDER BY network")
    assert champions.values.tolist() == [["embedding", "run-d"], ["similarity", "run-s"]]
    assert len(read_result(tmp_path, "champions")) == 2


def test_champion_scores_are_compared_only_within_a_like_validation_scope(tmp_path: Path) -> None:
    key = ("phrase_region", "similarity", "synthetic")
    at_half = ValidationScope(images=100, split_images=100, max_images=0, protocol="IoU 0.5")
    # A champion stored before scopes were recorded compares as before.
    assert promote_if_better(tmp_path, "old", *key, 40.0)[0]
    promoted, reason = promote_if_better(tmp_path, "run-a", *key, 50.0, scope=at_half)
    assert promoted and "beats champion old" in reason
    # Another protocol on the same images: a higher accuracy is not comparable.
    stricter = ValidationScope(images=100, split_images=100, max_images=0, protocol="IoU 0.6")
    promoted, reason = promote_if_better(tmp_path, "run-b", *key, 90.0, scope=stricter)
    assert not promoted
    assert reason == (
        "validation scope differs: IoU 0.6 on all 100 images against champion run-a's IoU 0.5 "
        "on all 100 images; not compared, champion kept"
    )
    fewer = ValidationScope(images=30, split_images=100, max_images=30, protocol="IoU 0.5")
    assert (
        "IoU 0.5 on 30 of 100 images against"
        in promote_if_better(tmp_path, "run-c", *key, 90.0, scope=fewer)[1]
    )
    # A cap above the split's size scores the same images as no cap: compared.
    capped = ValidationScope(images=100, split_images=100, max_images=500, protocol="IoU 0.5")
    promoted, reason = promote_if_better(tmp_path, "run-d", *key, 55.0, scope=capped)
    assert promoted and "beats champion run-a" in reason
    champion = current_champion(tmp_path, *key)
    assert ValidationScope.from_json(champion["validation_scope"]) == capped


def test_retrain_cron_is_read_from_the_environment_when_the_location_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TWOBRANCH_RETRAIN_CRON", raising=False)
    assert retrain_cron_from_env() == "0 3 * * 1"
    monkeypatch.setenv("TWOBRANCH_RETRAIN_CRON", "30 1 * * *")
    assert build_retrain_schedule(retrain_cron_from_env()).cron_schedule == "30 1 * * *"
