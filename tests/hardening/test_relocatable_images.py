"""Image paths survive a moved data root: stored relative to it, resolved where it is now, in
the tables the pipeline reads, in the images SQL view and in search results."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from ops.data.dataset_store import load_dataset_table
from ops.search.engine import open_index, search_image, search_text
from ops.storage.paths import dataset_table_file
from ops.storage.sql import run_query
from tests.karpathy_folder import write_karpathy_folder
from tests.pipeline_helpers import FEATURE_ASSETS, materialize, register_custom

NET = "image_sentence_embedding_net"
SMALL = {"batch_images": 10, "hidden_dim": 64, "embed_dim": 32, "epochs": 1}


def _inside(paths: list[str], root: Path) -> bool:
    return bool(paths) and all(Path(p).is_file() and Path(p).is_relative_to(root) for p in paths)


def test_a_moved_data_root_shows_usable_image_paths_in_tables_sql_and_search(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    # The photos live inside the data root, as downloaded and generated datasets do.
    name = register_custom(root, write_karpathy_folder(root / "raw" / "photos"), "photos")
    with dg.instance_for_test() as instance:
        materialize(
            [*FEATURE_ASSETS, "neighborhood_graph", NET, "retrieval_index"],
            root,
            {NET: SMALL},
            instance,
            dataset=name,
        )
    stored = pq.read_table(dataset_table_file(root, name, "images")).column("path").to_pylist()
    assert all(path.startswith("raw/photos/") for path in stored)

    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(root, moved)
    root.rename(tmp_path / "gone")

    assert _inside(load_dataset_table(moved, name, "images")["path"].tolist(), moved)
    in_sql = run_query(moved, f"SELECT path FROM images WHERE dataset = '{name}'")["path"]
    assert len(in_sql) == len(stored) and _inside(in_sql.tolist(), moved)
    index = open_index(moved, name, "cpu")
    images = search_text(index, ["a red star"], k=5)[0].hits
    assert len(images) == 5 and _inside([hit.path for hit in images], moved)
    captions = search_image(index, images[0].path, k=3).hits
    assert _inside([hit.path for hit in captions], moved)
