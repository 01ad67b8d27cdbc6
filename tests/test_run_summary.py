"""Seconds per asset from step timings: shard steps add up under their asset."""

from ops.report.run_summary import StepTiming, asset_of_step, format_timings, seconds_per_asset


def test_step_keys_map_to_their_asset() -> None:
    assert asset_of_step("image_features.image_features_shard[3]") == "image_features"
    assert asset_of_step("image_features.image_features_plan") == "image_features"
    assert asset_of_step("report") == "report"


def test_shard_steps_add_up_and_the_worst_status_wins() -> None:
    steps = [
        StepTiming("image_features.image_features_plan", "SUCCESS", 0.5),
        StepTiming("image_features.image_features_shard[0]", "SUCCESS", 30.0),
        StepTiming("image_features.image_features_shard[1]", "FAILURE", 20.0),
        StepTiming("report", "SUCCESS", 2.0),
        StepTiming("phrase_region_embedding_net", "SKIPPED", 0.25),
    ]
    table = seconds_per_asset(steps)
    assert table["asset"].tolist() == ["image_features", "report", "phrase_region_embedding_net"]
    assert table["seconds"].tolist() == [50.5, 2.0, 0.25]
    assert table["steps"].tolist() == [3, 1, 1]
    assert table["status"].tolist() == ["FAILURE", "SUCCESS", "SKIPPED"]
    text = format_timings(table, wall_seconds=55.0)
    assert text.splitlines()[-2].split()[-1] == "52.8"
    assert text.splitlines()[-1].split()[-1] == "55.0"
