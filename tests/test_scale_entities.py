"""benchmarks/scale_entities.py writes a phrase task that the real steps accept: the tables
publish, every training phrase has positive regions in the graph, the region features are
float16 at 4,096-d, and localization on the test split runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import scale_entities
    finally:
        sys.path.remove(str(BENCHMARKS))
    folder = tmp_path_factory.mktemp("entities")
    # 0.0007 of the dataset: 21 training images, one validation and one test image.
    manifest = scale_entities.write_entities(folder, 0.0007, "float16")
    return scale_entities, folder, manifest


def test_tables_and_files_have_the_papers_shape(entities) -> None:
    from ops.features.feature_cache import feature_rows
    from ops.storage.parquet_io import read_schema, read_table

    _, _, manifest = entities
    assert manifest["sizes"] == {"train": 21, "val": 1, "test": 1}
    # 200 proposals an image, and the 8 entities' boxes of each training image.
    assert manifest["region_rows"] == 23 * 200 + 21 * 8
    assert manifest["phrases"] == {"train": 21 * 15, "val": 15, "test": 15}
    files = manifest["files"]
    feature = read_schema(files["region_features"]).field("feature").type
    assert feature.list_size == 4_096 and str(feature.value_type) == "halffloat"
    ids, rows = feature_rows(files["region_features"])
    proposals = read_table(files["region_proposals"])
    assert ids["region_id"].tolist() == proposals["region_id"].tolist()
    values = rows.take(np.arange(200))
    assert values.dtype == np.float32 and 0.4 < (values == 0).mean() < 0.6  # post-ReLU


def test_graph_training_steps_and_localization_run(entities) -> None:
    scale_entities, folder, manifest = entities
    scale_entities.run_stage("graph", folder, steps=2)
    graph = json.loads((folder / "graph.json").read_text())
    # Each training phrase's entity has three near copies among the proposals (IoU ≥ 0.5).
    assert graph["edges"]["phrase_region"] >= 3 * manifest["phrases"]["train"]
    scale_entities.run_stage("train_phrase_embedding", folder, steps=2)
    run = json.loads((folder / "embedding.json").read_text())
    assert Path(run["checkpoint"]).is_file()
    scale_entities.run_stage("localization_eval", folder, steps=2)
    summary = json.loads((folder / "localization.json").read_text())
    assert summary["n_phrases"] == 15 and 0 <= summary["accuracy"] <= 100
