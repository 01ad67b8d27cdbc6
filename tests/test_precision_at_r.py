"""R-Precision and mAP@R against a literal per-query sort, by hand, and in stored results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ops.metrics.precision_at_r import precision_at_r
from ops.metrics.retrieval_protocols import evaluate_protocol, evaluate_protocol_scores
from ops.storage.paths import result_file
from ops.storage.results_store import (
    RESULT_SCHEMAS,
    SCHEMA_PLACEHOLDER,
    publish_catalogue,
    write_result,
)
from ops.storage.sql import run_query


def reference(scores: np.ndarray, caption_image: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per direction: (R-Precision, mAP@R) in percent from a stable descending sort per query
    (ties by index), straight from the definition."""

    def per_query(order: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
        r = int(relevant.sum())
        top = relevant[order][:r]
        precisions = np.cumsum(top) / np.arange(1, r + 1)
        return top.mean(), float((precisions * top).sum() / r)

    def descending(values: np.ndarray) -> np.ndarray:
        return np.lexsort((np.arange(len(values)), -values))

    i2t = [per_query(descending(scores[i]), caption_image == i) for i in range(scores.shape[0])]
    t2i = [
        per_query(descending(scores[:, c]), np.arange(scores.shape[0]) == caption_image[c])
        for c in range(scores.shape[1])
    ]
    return {
        name: (100 * np.mean([q[0] for q in rows]), 100 * np.mean([q[1] for q in rows]))
        for name, rows in (("i2t", i2t), ("t2i", t2i))
    }


def test_hand_computed_queries() -> None:
    # Query 0: R = 2 positives at ranks 1 and 3 → R-Precision 1/2, mAP@R (1/1)/2.
    # Query 1: R = 2 at ranks 2 and 1 → both 1. Query 2: R = 3 at ranks 2, 3, 9 → 2/3 and
    # (1/2 + 2/3)/3. Query 3: R = 1 at rank 4 → 0 and 0.
    ranks = np.array([1, 3, 2, 1, 9, 2, 3, 4])
    query = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    r_precision, map_at_r = precision_at_r(ranks, query, 4)
    np.testing.assert_allclose(r_precision, [0.5, 1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(map_at_r, [0.5, 1.0, (1 / 2 + 2 / 3) / 3, 0.0])


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_stored_scores_match_the_definition(tied: bool, chunk: int) -> None:
    rng = np.random.default_rng(11 + int(tied))
    caption_image = rng.permutation(np.repeat(np.arange(17), rng.integers(1, 6, size=17)))
    scores = rng.normal(size=(17, len(caption_image)))
    if tied:
        scores = np.round(scores, 1)  # many ties, broken by index as the evaluator does
    rows = evaluate_protocol_scores(scores, caption_image, "all", chunk=chunk).metrics
    expected = reference(scores, caption_image)
    for row in rows:
        want_rp, want_map = expected[row["direction"]]
        assert row["r_precision"] == pytest.approx(want_rp, abs=1e-9), row["direction"]
        assert row["map_at_r"] == pytest.approx(want_map, abs=1e-9), row["direction"]
    t2i = next(row for row in rows if row["direction"] == "t2i")
    assert t2i["r_precision"] == t2i["map_at_r"] == t2i["r1"]  # one positive per caption


def test_embeddings_agree_with_their_score_matrix() -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.nn.functional.normalize(torch.randn(30, 8, generator=generator), dim=1)
    caption_image = np.repeat(np.arange(30), 5)
    texts = torch.nn.functional.normalize(
        images[torch.from_numpy(caption_image)] + 0.9 * torch.randn(150, 8, generator=generator),
        dim=1,
    )
    from_embeddings = evaluate_protocol(images, texts, caption_image, "all", chunk=16).metrics
    scores = (images @ texts.T).numpy().astype(np.float64)
    expected = reference(scores, caption_image)
    for row in from_embeddings:
        assert 0.0 < row["r_precision"] < 100.0
        assert row["map_at_r"] <= row["r_precision"] + 1e-9  # each term is at most 1
        want_rp, want_map = expected[row["direction"]]
        assert row["r_precision"] == pytest.approx(want_rp, abs=1e-6)
        assert row["map_at_r"] == pytest.approx(want_map, abs=1e-6)


def _metrics_row(run_id: str, **extra: float) -> pd.DataFrame:
    row = {
        "run_id": run_id,
        "dataset": "demo",
        "split": "test",
        "method": "single_stage",
        "protocol": "all",
        "fold": 0,
        "direction": "i2t",
        "r1": 10.0,
        "r5": 30.0,
        "r10": 50.0,
        "median_rank": 11.0,
        "mean_rank": 20.0,
        "rsum": 180.0,
    }
    return pd.DataFrame([row | extra])


def test_rows_stored_before_the_new_columns_read_as_null(tmp_path: Path) -> None:
    root = tmp_path
    # A data root as the previous version left it: placeholder and rows without the columns.
    old_schema = pa.schema(
        [
            f
            for f in RESULT_SCHEMAS["retrieval_metrics"]
            if f.name not in ("r_precision", "map_at_r")
        ]
    )
    publish_catalogue(root)
    pq.write_table(
        old_schema.empty_table(), result_file(root, "retrieval_metrics", SCHEMA_PLACEHOLDER)
    )
    old = result_file(root, "retrieval_metrics", "old-run")
    pq.write_table(pa.Table.from_pandas(_metrics_row("old-run"), preserve_index=False), old)
    # A query on the old catalogue still needs the column; the catalogue is rebuilt for it.
    frame = run_query(root, "SELECT run_id, r1, r_precision, map_at_r FROM retrieval_metrics")
    assert frame["run_id"].tolist() == ["old-run"] and frame["r1"].tolist() == [10.0]
    assert frame[["r_precision", "map_at_r"]].isna().all().all()

    write_result(
        root, "retrieval_metrics", "new-run", _metrics_row("new-run", r_precision=7.5, map_at_r=5.0)
    )
    publish_catalogue(root)
    both = run_query(
        root, "SELECT run_id, r_precision, map_at_r FROM retrieval_metrics ORDER BY run_id"
    )
    assert both["run_id"].tolist() == ["new-run", "old-run"]
    assert both["r_precision"].tolist()[0] == 7.5 and pd.isna(both["r_precision"].tolist()[1])
    assert both["map_at_r"].tolist()[0] == 5.0 and pd.isna(both["map_at_r"].tolist()[1])
