"""A query keeps the files it was planned on: each catalogue reads its own immutable snapshot
of the tables, and a snapshot goes only when no reader holds it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from ops.data.dataset_store import publish_dataset_tables
from ops.storage import snapshots
from ops.storage.paths import results_db, snapshots_dir
from ops.storage.results_store import catalogue_marker, connect_leased, publish_catalogue
from tests.hardening.dataset_versions import dataset_version, expected_view, visible_view

COUNTS = (
    "SELECT (SELECT count(*) FROM images) AS images, (SELECT count(*) FROM captions) AS captions,"
    " (SELECT min(image_id) FROM images) AS first"
)


def _expected_counts(version: int) -> tuple[int, int, str]:
    tables = dataset_version(version)
    return len(tables.images), len(tables.captions), sorted(tables.images["image_id"])[0]


def _generations(root: Path) -> list[str]:
    return sorted(p.name for p in snapshots_dir(root).iterdir() if p.is_dir())


def test_a_query_planned_before_a_publish_reads_the_version_it_was_planned_on(
    tmp_path: Path,
) -> None:
    """DuckDB binds a query (lists and opens its files) before it runs; a publish in between
    used to replace the files under it, so it read the new bytes with the old plan."""
    root = tmp_path / "data"
    publish_dataset_tables(root, dataset_version(1))
    publish_catalogue(root)
    con = duckdb.connect(str(results_db(root)), read_only=True)
    try:
        planned = con.sql(COUNTS)  # bound now, run at fetch
        publish_dataset_tables(root, dataset_version(2))
        publish_catalogue(root)
        assert planned.fetchall() == [_expected_counts(1)]
    finally:
        con.close()
    assert visible_view(root) == expected_view(2)


def test_a_leased_snapshot_outlives_later_publishes_and_goes_once_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "RETIRED_GRACE_SECONDS", 0.0)
    root = tmp_path / "data"
    publish_dataset_tables(root, dataset_version(1))
    (first,) = _generations(root)  # the generations before it were unheld: removed
    connect = lambda: duckdb.connect(str(results_db(root)), read_only=True)  # noqa: E731
    con, lease = connect_leased(root, connect)
    try:
        assert catalogue_marker(con)[2] == first
        planned = con.sql(COUNTS)
        for version in (2, 3):
            publish_dataset_tables(root, dataset_version(version))
        # The leased generation stays beside the current one; those between were removed.
        generations = _generations(root)
        assert len(generations) == 2 and generations[0] == first
        assert planned.fetchall() == [_expected_counts(1)]
    finally:
        con.close()
        snapshots.release(lease)
    assert visible_view(root) == expected_view(3)
    publish_catalogue(root)
    assert first not in _generations(root) and len(_generations(root)) == 1


def test_retired_snapshots_stay_for_the_grace_period_for_readers_without_a_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    for version in (1, 2, 3):
        publish_dataset_tables(root, dataset_version(version))
    retired = _generations(root)
    assert len(retired) >= 3  # every catalogue since the first, within the grace period
    monkeypatch.setattr(snapshots, "RETIRED_GRACE_SECONDS", 0.0)
    publish_catalogue(root)
    assert len(_generations(root)) == 1 and _generations(root)[0] not in retired
    assert visible_view(root) == expected_view(3)
