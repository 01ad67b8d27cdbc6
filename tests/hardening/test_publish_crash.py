"""Readers never see half a publish: staging is invisible to the SQL views, a crash at any stage
leaves the previous or the new tables, and the next publish removes what the crash left."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import ops.storage.atomic
from ops.data.dataset_store import publish_dataset_tables
from ops.graph.build import GraphSettings
from ops.graph.store import write_graph
from ops.storage.paths import result_file, staging_dir, tables_dir
from ops.storage.results_store import publish_catalogue, write_result
from ops.storage.sql import run_query
from tests.hardening.dataset_versions import (
    DATASET,
    dataset_version,
    expected_view,
    visible_view,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Publishes version 2 of the dataset and stops (prints the stage, then sleeps until killed) at
# the stage named in argv[2].
PAUSING_PUBLISH = """
import sys, time
from pathlib import Path
import ops.storage.atomic, ops.data.dataset_store as store
from tests.hardening.dataset_versions import dataset_version

root, stop_at = Path(sys.argv[1]), sys.argv[2]

def pause(stage):
    if stage == stop_at:
        print(stage, flush=True)
        time.sleep(600)

write, written = store.write_table_file, []
def write_table_file(*args):
    if len(written) == 1:
        pause("writing")  # one of the four files is staged
    written.append(write(*args))
    return written[-1]

exchange = ops.storage.atomic._exchange
def _exchange(*args):
    done = exchange(*args)
    pause("exchanged")  # the old folder sits in staging, not yet moved aside
    return done

replace = store.replace_directory
def replace_directory(*args, **kwargs):
    pause("staged")
    replace(*args, **kwargs)
    pause("swapped")

store.write_table_file, ops.storage.atomic._exchange = write_table_file, _exchange
store.replace_directory = replace_directory
store.publish_dataset_tables(root, dataset_version(2))
print("finished", flush=True)
"""


def _published(root: Path, version: int) -> None:
    publish_dataset_tables(root, dataset_version(version))
    publish_catalogue(root)


def _assert_clean(root: Path) -> None:
    assert sorted(p.name for p in staging_dir(root).iterdir()) == [".lock"]
    assert sorted(p.name for p in (root / "tables").iterdir()) == ["_schema", DATASET]


@pytest.mark.parametrize(
    ("stage", "shown"), [("writing", 1), ("staged", 1), ("exchanged", 2), ("swapped", 2)]
)
def test_kill_during_publish_shows_one_version_and_next_publish_cleans_up(
    tmp_path: Path, stage: str, shown: int
) -> None:
    root = tmp_path / "data"
    _published(root, 1)
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSING_PUBLISH, str(root), stage],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == stage
        # The catalogue reads its own snapshot of version 1 until it is rebuilt ...
        assert visible_view(root) == expected_view(1)
        publish_catalogue(root)  # ... and a rebuild while the publish is paused there
        assert visible_view(root) == expected_view(shown)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    publish_catalogue(root)
    assert visible_view(root) == expected_view(shown)  # and after it died there
    assert len(list(staging_dir(root).iterdir())) > 1  # the killed publish left its folder
    _published(root, 3)
    assert visible_view(root) == expected_view(3)
    _assert_clean(root)


def test_folders_left_inside_tables_by_earlier_versions_are_invisible_and_removed(
    tmp_path: Path,
) -> None:
    """Before the staging area, publishes staged inside tables/ and a kill left the folder
    there: every view counted the dataset twice, for good."""
    root = tmp_path / "data"
    _published(root, 1)
    for leftover in (".demo.staging-0badf00d", ".demo.retired-0badf00d"):
        shutil.copytree(tables_dir(root, DATASET), root / "tables" / leftover)
    publish_catalogue(root)
    assert visible_view(root) == expected_view(1)
    _published(root, 2)
    assert visible_view(root) == expected_view(2)
    _assert_clean(root)


def _run_rows(run_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": run_id,
            "method": "single_stage",
            "protocol": "1k",
            "fold": 0,
            "direction": "t2i",
            "query_id": ["0", "1", "2"],
            "rank": 1,
            "top1_id": "x",
        }
    )


def test_hidden_files_next_to_results_and_derived_tables_are_not_read(tmp_path: Path) -> None:
    root = tmp_path / "data"
    ranks = write_result(root, "retrieval_ranks", "run-a", _run_rows("run-a"))
    neighbors = pd.DataFrame(
        {"dataset": [DATASET], "relation": ["image"], "source_id": ["a"], "target_id": ["b"]}
    ).assign(weight=1.0)
    graph = write_graph(root, DATASET, GraphSettings(), [neighbors]).path
    publish_catalogue(root)
    shutil.copy(ranks, result_file(root, "retrieval_ranks", ".run-a.partial"))
    shutil.copytree(graph.parent, graph.parent.with_name(f".{DATASET}.partial"))
    assert run_query(root, "SELECT count(*) AS n FROM retrieval_ranks")["n"][0] == 3
    assert run_query(root, "SELECT count(*) AS n FROM neighbors")["n"][0] == 1


def test_without_an_atomic_exchange_publishing_still_replaces_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops.storage.atomic, "_exchange", lambda first, second: False)
    root = tmp_path / "data"
    _published(root, 1)
    _published(root, 2)
    assert visible_view(root) == expected_view(2)
    _assert_clean(root)
