"""The whole asset graph, run for real in process on a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.run_summary import check_steps, print_run_summaries, step_timings
from ops.report.run_summary import CHECKS_ROW, headline_results, seconds_per_asset
from ops.storage.sql import run_query
from tests.pipeline_helpers import ALL_KEYS, SHARDED, TRAINED


def test_every_asset_materializes_and_every_check_passes(synthetic_pipeline) -> None:
    _, result, _, _ = synthetic_pipeline
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(ALL_KEYS)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    # With 12 test images chance R@10 is 83%, so the tiny models' evaluation checks may go
    # either way; every data and feature check must pass.
    evaluation_checks = {"retrieval_above_chance", "localization_above_random"}
    assert evaluation_checks <= set(checks)
    assert all(passed for name, passed in checks.items() if name not in evaluation_checks)
    assert len(checks) == 10


def test_results_are_queryable_per_run(synthetic_pipeline) -> None:
    root, _, outputs, _ = synthetic_pipeline
    runs = run_query(root, "SELECT run_id, status, champion FROM training_runs ORDER BY run_id")
    assert sorted(runs["run_id"]) == sorted(outputs[name].run_id for name in TRAINED)
    assert set(runs["status"]) == {"finished"} and runs["champion"].all()
    epochs = run_query(root, "SELECT run_id, count(*) AS n FROM epoch_metrics GROUP BY run_id")
    assert (epochs["n"] >= 1).all() and len(epochs) == 4
    scopes = run_query(
        root,
        "SELECT DISTINCT task, validation_scope->>'protocol' AS protocol, "
        "validation_scope->>'images' = validation_scope->>'split_images' AS whole "
        "FROM training_runs ORDER BY task",
    )
    assert scopes.values.tolist() == [
        ["image_sentence", "R-sum", True],
        ["phrase_region", "accuracy at IoU ≥ 0.5", True],
    ]
    # Evaluation scored exactly the models handed to it by lineage.
    evaluated = run_query(root, "SELECT DISTINCT run_id, method FROM retrieval_metrics")
    assert set(evaluated["run_id"]) == {
        outputs["image_sentence_embedding_net"].run_id,
        outputs["image_sentence_similarity_net"].run_id,
    }
    assert {"single_stage", "two_stage_k20"} == set(evaluated["method"])
    recalls = run_query(root, "SELECT r1, r5, r10, rsum FROM retrieval_metrics")
    assert ((recalls[["r1", "r5", "r10"]] >= 0) & (recalls[["r1", "r5", "r10"]] <= 100)).all().all()
    assert (recalls["r1"] <= recalls["r5"]).all() and (recalls["r5"] <= recalls["r10"]).all()
    failures = run_query(root, "SELECT count(*) AS n FROM retrieval_ranks WHERE rank > 10")
    per_query = run_query(root, "SELECT count(*) AS n FROM retrieval_ranks")
    assert 0 <= failures["n"][0] < per_query["n"][0]
    localization = run_query(
        root, "SELECT accuracy, upper_bound FROM localization_metrics WHERE phrase_type = 'all'"
    )
    assert len(localization) == 2
    assert (localization["accuracy"] <= localization["upper_bound"]).all()


def test_report_is_self_contained_html_with_plots(synthetic_pipeline) -> None:
    _, _, outputs, _ = synthetic_pipeline
    html = Path(outputs["report"].path).read_text()
    assert html.startswith("<!doctype html>")
    assert html.count("data:image/png;base64,") >= 5
    for heading in ("Training runs", "Recall@K", "Published numbers", "Grounding gallery"):
        assert heading in html
    assert 'src="http' not in html  # nothing fetched from elsewhere


def test_feature_extraction_ran_as_shard_steps_and_cleaned_up(synthetic_pipeline) -> None:
    root, result, _, _ = synthetic_pipeline
    steps = {event.step_key for event in result.get_step_success_events()}
    materializations = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    for name in SHARDED:
        shard_steps = sorted(step for step in steps if step.startswith(f"{name}.{name}_shard["))
        assert len(shard_steps) == 3, shard_steps
        assert {f"{name}.{name}_plan", f"{name}.{name}_merge"} <= steps
        assert materializations[name]["shards"].value == 3
    assert not list(root.rglob(".shards")), "merged shard files must be removed"
    region_rows = materializations["region_features"]["rows"].value
    proposals = run_query(root, "SELECT count(*) AS n FROM region_proposals")["n"][0]
    assert region_rows == proposals  # every proposal of every shard has a vector
    assert materializations["image_features"]["rows"].value == 60 + 12 + 12  # every image once


def test_every_asset_reports_seconds_rows_and_something_to_look_at(synthetic_pipeline) -> None:
    _, result, _, _ = synthetic_pipeline
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    visual = {"preview", "metrics", "summary", "curves", "recall_at_k", "training_curves"}
    for key, values in metadata.items():
        assert "seconds" in values and values["seconds"].value >= 0, key
        if key in {"raw_dataset", "report"}:  # files on disk, not rows
            continue
        assert values["rows"].value > 0, key
        assert visual & set(values), key
    image_preview = metadata["image_features"]["preview"].value
    assert "norm" in image_preview and "first_values" in image_preview
    assert image_preview.count("\n") >= 6  # header, rule and five rows


def test_summary_times_every_asset_of_the_run_and_shows_its_results(
    synthetic_pipeline, capsys
) -> None:
    root, result, _, instance = synthetic_pipeline
    checks = check_steps(instance, instance.get_run_by_id(result.run_id))
    assert checks == {check.node_def.name for check in ALL_CHECKS}
    timings = seconds_per_asset(step_timings(instance, result.run_id), checks)
    assert set(timings["asset"]) == {a.node_def.name for a in ALL_ASSETS} | {CHECKS_ROW}
    assert timings.set_index("asset").loc[CHECKS_ROW, "steps"] == 10
    shards = timings.set_index("asset")["steps"]
    # plan + 3 shards + merge
    assert all(shards[name] == 5 for name in SHARDED)
    stats = instance.get_run_step_stats(result.run_id)
    assert timings["seconds"].sum() == pytest.approx(sum(s.end_time - s.start_time for s in stats))
    assert print_run_summaries(instance, root) == 1
    printed = capsys.readouterr().out
    assert f"== synthetic: run {result.run_id} (success) ==" in printed
    for name in timings["asset"]:
        assert f"\n{name} " in printed
    stored = run_query(
        root,
        "SELECT m.r10 FROM retrieval_metrics m JOIN training_runs t USING (run_id) "
        "WHERE t.network = 'embedding' AND t.task = 'image_sentence' AND m.split = 'test' "
        "AND m.fold <= 0 AND m.method = 'single_stage' AND m.direction = 't2i'",
    )
    retrieval, localization = headline_results(root, "synthetic")
    embedding = retrieval[(retrieval["network"] == "embedding")]
    t2i = embedding[(embedding["method"] == "single_stage") & (embedding["direction"] == "t2i")]
    assert sorted(t2i["r10"]) == sorted(stored["r10"])
    assert set(localization["network"]) == {"embedding", "similarity"}


def test_extended_positive_metrics_are_stored_and_reported(synthetic_pipeline) -> None:
    root, result, outputs, _ = synthetic_pipeline
    rows = run_query(
        root,
        "SELECT direction, r1, r5, r_precision, map_at_r FROM retrieval_metrics "
        "WHERE direction <> 't2t'",
    ).to_dict("records")
    assert rows and all(0 <= r["map_at_r"] <= r["r_precision"] <= 100 for r in rows)
    # Sentence-to-sentence rows have recalls but no R-Precision (NULL in SQL).
    t2t = run_query(
        root,
        "SELECT count(*) AS n, count(r_precision) AS with_precision, min(r1) AS low "
        "FROM retrieval_metrics WHERE direction = 't2t'",
    ).iloc[0]
    assert t2t["n"] > 0 and t2t["with_precision"] == 0 and t2t["low"] >= 0
    # A caption has one positive: both equal its R@1. An image has five: any credit needs one
    # of them in the top five, so R-Precision is at most R@5.
    assert all(
        r["r_precision"] == r["map_at_r"] == r["r1"] for r in rows if r["direction"] == "t2i"
    )
    assert all(r["r_precision"] <= r["r5"] for r in rows if r["direction"] == "i2t")
    html = Path(outputs["report"].path).read_text()
    assert "r_precision" in html and "map_at_r" in html
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "retrieval_eval"
    )
    assert metadata["eccv_caption"].value.startswith("not computed: 'synthetic' is not COCO")
