"""Precomputed-feature datasets (VSE++ / SCAN precomp folders): the loader's rules, its
refusals, and a whole pipeline run on one, beside nothing else."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from ops.data.precomp import (
    EMPTY_CAPTION,
    NON_FINITE_FEATURES,
    load_precomp,
    write_precomp_image_features,
)
from ops.data.registry import add_dataset
from ops.data.tables import DatasetFormatError
from ops.search.engine import open_index, search_image, search_text
from ops.search.errors import SearchError
from ops.storage.parquet_io import read_features
from ops.storage.sql import run_query
from tests.pipeline_helpers import ALL_KEYS, TRAINED, materialize

SIZES = {"train": 30, "dev": 8, "test": 8}


def write_precomp(
    folder: Path,
    sizes: dict[str, int] = SIZES,
    dim: int = 12,
    regions: int | None = None,
    ids: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A precomp folder whose captions name their image's row (``image <prefix> <row>``), so
    the k // 5 rule is checkable; returns each split's feature array."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in sizes.items():
        shape = (n, regions, dim) if regions else (n, dim)
        arrays[prefix] = rng.normal(size=shape).astype(np.float32)
        np.save(folder / f"{prefix}_ims.npy", arrays[prefix])
        lines = [f"image {prefix} {k // 5} caption {k % 5}" for k in range(5 * n)]
        (folder / f"{prefix}_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if ids:
            names = [f"{prefix}-img{row:03d}" for row in range(n)]
            (folder / f"{prefix}_ids.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return arrays


def test_caption_k_belongs_to_image_k_div_5(tmp_path: Path) -> None:
    write_precomp(tmp_path)
    tables, listed = load_precomp(tmp_path, "pre")
    assert tables.images.groupby("split").size().to_dict() == {"test": 8, "train": 30, "val": 8}
    assert len(listed) == 46
    captions = tables.captions.set_index("caption_id")
    assert captions.loc["train_6#2", "text"] == "image train 6 caption 2"
    assert captions.loc["dev_7#4", "split"] == "val"
    assert (captions.groupby("image_id").size() == 5).all()
    assert tables.phrases.empty
    assert tables.images["path"].isna().all()


def test_ids_file_names_the_images_and_testall_replaces_test(tmp_path: Path) -> None:
    write_precomp(tmp_path, {"train": 10, "dev": 5, "test": 5, "testall": 25}, ids=True)
    tables, _ = load_precomp(tmp_path, "pre")
    test = tables.images[tables.images["split"] == "test"]
    assert len(test) == 25
    assert test["image_id"].iloc[3] == "testall-img003"
    row = tables.captions.set_index("caption_id").loc["testall-img003#1"]
    assert row["text"] == "image testall 3 caption 1"


def test_features_follow_the_images_table_and_regions_are_mean_pooled(tmp_path: Path) -> None:
    arrays = write_precomp(tmp_path / "pre", regions=3)
    tables, _ = load_precomp(tmp_path / "pre", "pre")
    order = tables.images.sample(frac=1.0, random_state=1)
    stats = write_precomp_image_features(tmp_path / "pre", order, tmp_path / "f.parquet", "pre")
    ids, matrix = read_features(tmp_path / "f.parquet")
    assert stats.rows == 46 and stats.dim == 12 and stats.pooling == "mean over regions"
    assert ids["image_id"].tolist() == order["image_id"].tolist()
    row = ids.index[ids["image_id"] == "dev_5"][0]
    np.testing.assert_allclose(matrix[row], arrays["dev"][5].mean(axis=0), rtol=1e-6)


def test_caption_count_not_five_per_image_names_file_and_counts(tmp_path: Path) -> None:
    write_precomp(tmp_path)
    path = tmp_path / "dev_caps.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(DatasetFormatError) as error:
        load_precomp(tmp_path, "pre")
    message = str(error.value)
    assert str(path) in message and "38 captions for 8 images" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "array",
    [np.zeros(40, np.float32), np.zeros((8, 2, 3, 4), np.float32), np.zeros((8, 12), np.int64)],
    ids=["1-d", "4-d", "integer"],
)
def test_features_that_are_not_2d_or_3d_float_are_refused(tmp_path: Path, array) -> None:
    write_precomp(tmp_path)
    np.save(tmp_path / "test_ims.npy", array)
    with pytest.raises(DatasetFormatError, match=r"test_ims\.npy: expected a float array"):
        load_precomp(tmp_path, "pre")


def test_a_missing_split_is_named(tmp_path: Path) -> None:
    write_precomp(tmp_path)
    (tmp_path / "dev_ims.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"dev_ims\.npy: precomp split 'val' is missing"):
        load_precomp(tmp_path, "pre")


def test_nan_rows_and_empty_captions_are_counted_rejects(tmp_path: Path) -> None:
    arrays = write_precomp(tmp_path)
    arrays["train"][4, 2] = np.nan
    np.save(tmp_path / "train_ims.npy", arrays["train"])
    lines = (tmp_path / "test_caps.txt").read_text().splitlines()
    lines[11] = "   "
    (tmp_path / "test_caps.txt").write_text("\n".join(lines) + "\n")
    tables, _ = load_precomp(tmp_path, "pre")
    rejects = tables.rejects.set_index("item_id")
    assert rejects.loc["train_4", "reason"] == NON_FINITE_FEATURES
    assert rejects.loc["test_2#1", "reason"] == EMPTY_CAPTION
    assert rejects.loc["test_2#1", "path"].endswith("test_caps.txt:12")
    assert "train_4" not in set(tables.images["image_id"])
    assert not tables.captions["image_id"].eq("train_4").any()
    assert (tables.captions["image_id"] == "test_2").sum() == 4
    assert len(tables.rejects) == 2


def test_registering_needs_the_folder(tmp_path: Path) -> None:
    from ops.data.registry import DatasetRegistryError

    with pytest.raises(DatasetRegistryError, match="needs --path"):
        add_dataset(tmp_path / "data", "pre", "precomp")


TINY = {
    name: {"epochs": 2, "batch_images": 10, "hidden_dim": 32, "embed_dim": 16} for name in TRAINED
}


def test_whole_pipeline_on_a_precomp_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_precomp(tmp_path / "vse", {"train": 60, "dev": 12, "test": 12}, dim=24, regions=2)
    add_dataset(root, "vse", "precomp", tmp_path / "vse")
    with dg.instance_for_test() as instance:
        result = materialize(ALL_KEYS, root, TINY, instance=instance, dataset="vse")
        assert result.success
        features = [
            event
            for event in result.get_asset_materialization_events()
            if event.asset_key == dg.AssetKey("image_features")
        ]
        metadata = features[0].materialization.metadata
        assert "no CNN ran" in metadata["feature_source"].value
        assert metadata["region_pooling"].value == "mean over regions"
        assert metadata["rows"].value == 84
        trained = next(
            event.materialization.metadata
            for event in result.get_asset_materialization_events()
            if event.asset_key == dg.AssetKey("image_sentence_embedding_net")
        )
        assert trained["feature_placement"].value == "gathered per batch"
    per_split = run_query(
        root, "SELECT split, count(*) AS n FROM captions WHERE dataset = 'vse' GROUP BY ALL"
    )
    assert dict(per_split.values.tolist()) == {"train": 300, "val": 60, "test": 60}
    runs = run_query(root, "SELECT count(*) FROM training_runs WHERE dataset = 'vse'")
    assert int(runs.iloc[0, 0]) == 2
    metrics = run_query(
        root,
        "SELECT count(*) AS n, min(r1) AS low, max(r10) AS high FROM retrieval_metrics "
        "WHERE dataset = 'vse' AND protocol = 'all'",
    )
    assert int(metrics["n"].iloc[0]) > 0
    assert 0 <= metrics["low"].iloc[0] <= metrics["high"].iloc[0] <= 100
    index = open_index(root, "vse", device="cpu")
    (answer,) = search_text(index, ["image test 3 caption 1"], k=4, split="test")
    assert answer.error is None and len(answer.hits) == 4
    assert all(hit.image_id.startswith("test_") for hit in answer.hits)
    with pytest.raises(SearchError, match="precomputed image features"):
        search_image(index, tmp_path / "vse" / "train_ims.npy", k=3)


def test_region_rows_are_gathered_a_few_at_a_time_with_the_same_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ops.data.precomp as precomp

    arrays = write_precomp(tmp_path / "pre", regions=3)
    tables, _ = load_precomp(tmp_path / "pre", "pre")
    order = tables.images.sample(frac=1.0, random_state=2)
    monkeypatch.setattr(precomp, "GATHER_ELEMENTS", 3 * 12 * 5)  # five rows per read
    write_precomp_image_features(tmp_path / "pre", order, tmp_path / "f.parquet", "pre")
    ids, matrix = read_features(tmp_path / "f.parquet")
    expected = {
        f"{prefix}_{row}": values[row].mean(axis=0)
        for prefix, values in arrays.items()
        for row in range(len(values))
    }
    np.testing.assert_allclose(matrix, np.stack([expected[i] for i in ids["image_id"]]), rtol=1e-6)
