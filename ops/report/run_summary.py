"""What a pipeline run cost and what it scored: seconds per asset from the run's step timings,
and the headline results of a dataset's latest training runs from the results database.

Plain data in, text out: the Dagster-aware caller (``twobranch summary``) reads the step
timings from the instance and passes them here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ops.storage.sql import run_query

# A step key is the asset's op name, or for a graph-backed asset "asset.op[mapping_key]".
_STEP_KEY = re.compile(r"^(?P<asset>[^.\[]+)")


@dataclass(frozen=True)
class StepTiming:
    step_key: str
    status: str
    seconds: float


def asset_of_step(step_key: str) -> str:
    """``image_features.image_features_shard[0]`` → ``image_features``."""
    match = _STEP_KEY.match(step_key)
    return match.group("asset") if match else step_key


CHECKS_ROW = "(asset checks)"


def seconds_per_asset(
    steps: Iterable[StepTiming], check_steps: Collection[str] = ()
) -> pd.DataFrame:
    """One row per asset (a multi-asset's op counts as one), plus one row for the steps named
    in ``check_steps``: summed step seconds, step count and worst status, slowest first.

    Steps of one asset that ran side by side are summed, so the figure is the asset's compute
    time (on an in-process run, its wall time)."""
    rows = [
        {
            "asset": CHECKS_ROW if s.step_key in check_steps else asset_of_step(s.step_key),
            "seconds": s.seconds,
            "status": s.status,
        }
        for s in steps
    ]
    if not rows:
        return pd.DataFrame(columns=["asset", "seconds", "steps", "status"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby("asset", sort=False).agg(
        seconds=("seconds", "sum"),
        steps=("seconds", "size"),
        status=("status", lambda statuses: _worst(statuses)),
    )
    return grouped.sort_values("seconds", ascending=False).reset_index()


_STATUS_ORDER = ("FAILURE", "SKIPPED", "IN_PROGRESS", "UP_FOR_RETRY", "SUCCESS")


def _worst(statuses: Iterable[str]) -> str:
    present = set(statuses)
    return next((status for status in _STATUS_ORDER if status in present), "SUCCESS")


_LATEST_RUNS = """
WITH latest AS (
    SELECT run_id, task, network FROM (
        SELECT run_id, task, network, row_number() OVER (
            PARTITION BY task, network ORDER BY started_at DESC) AS newest
        FROM training_runs WHERE dataset = {dataset} AND status = 'finished')
    WHERE newest = 1)
"""

RETRIEVAL_HEADLINE = (
    _LATEST_RUNS
    + """
SELECT l.network, m.method, m.protocol, m.direction, m.r1, m.r5, m.r10
FROM retrieval_metrics m JOIN latest l USING (run_id)
WHERE m.split = 'test' AND m.fold <= 0
ORDER BY l.network, m.method, m.protocol, m.direction
"""
)

LOCALIZATION_HEADLINE = (
    _LATEST_RUNS
    + """
SELECT l.network, m.accuracy, m.upper_bound, m.n_phrases
FROM localization_metrics m JOIN latest l USING (run_id)
WHERE m.split = 'test' AND m.phrase_type = 'all'
ORDER BY l.network
"""
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def headline_results(root: Path, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test-split retrieval and phrase-localization results of the dataset's latest
    finished training run per network."""
    name = _literal(dataset)
    retrieval = run_query(root, RETRIEVAL_HEADLINE.format(dataset=name))
    localization = run_query(root, LOCALIZATION_HEADLINE.format(dataset=name))
    return retrieval, localization


def format_timings(timings: pd.DataFrame, wall_seconds: float | None = None) -> str:
    """The per-asset table, its total, and the run's wall time when known."""
    lines = [f"{'asset':34} {'seconds':>9} {'steps':>6}  status"]
    for row in timings.itertuples(index=False):
        lines.append(f"{row.asset:34} {row.seconds:9.1f} {row.steps:6d}  {row.status.lower()}")
    total = float(timings["seconds"].sum()) if len(timings) else 0.0
    lines.append(f"{'total (sum of steps)':34} {total:9.1f}")
    if wall_seconds is not None:
        lines.append(f"{'run wall time':34} {wall_seconds:9.1f}")
    return "\n".join(lines)
