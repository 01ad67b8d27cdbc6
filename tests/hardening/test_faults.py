"""Faults: killed writers, failing disks, broken features and foreign checkpoints."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from assets.definitions import ALL_ASSETS, ALL_CHECKS
from assets.resources import ComputeSettings, TwobranchStorage
from ops.data.dataset_store import load_dataset_table
from ops.evaluation.single_stage import evaluate_retrieval_single
from ops.features.image_features import extract_image_features
from ops.features.settings import ImageFeatureSettings
from ops.storage.parquet_io import FeatureWriter, read_features
from ops.training.checkpoint import CheckpointError
from ops.training.data import ImageSentenceData
from ops.training.inputs import ImageSentenceSplit
from tests.hardening.custom_dataset import write_custom_dataset
from tests.pipeline_helpers import materialize, register_custom

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = ["raw_dataset", "images", "captions", "phrases"]


def _images(folder: Path, n: int) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        Image.new("RGB", (32, 32), (i * 9 % 255, 40, 90)).save(path, "JPEG")
        rows.append({"image_id": str(i), "split": "train", "path": str(path)})
    return pd.DataFrame(rows)


SLOW_EXTRACTION = """
import sys, time, pandas as pd
from pathlib import Path
from ops.features.image_features import extract_image_features
from ops.features.settings import ImageFeatureSettings
images = pd.read_pickle(sys.argv[1])
def slow(done, total):
    print(done, flush=True)
    time.sleep(0.5)
extract_image_features(images, Path(sys.argv[2]),
                       ImageFeatureSettings(backbone="squeezenet1_1", batch_size=2),
                       num_workers=0, device="cpu", progress=slow)
"""


def test_kill_during_feature_writing_leaves_no_partial_file(tmp_path: Path) -> None:
    images = _images(tmp_path / "img", 24)
    images.to_pickle(tmp_path / "images.pkl")
    out = tmp_path / "features" / "image_squeezenet1_1.parquet"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_EXTRACTION, str(tmp_path / "images.pkl"), str(out)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3):  # a few batches are written: the temporary file is half full
            assert process.stdout.readline(), "extraction ended early"
        assert list(out.parent.glob(f".{out.name}.tmp-*"))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()  # readers never see a partial file

    stats = extract_image_features(
        images,
        out,
        ImageFeatureSettings(backbone="squeezenet1_1", batch_size=8),
        num_workers=0,
        device="cpu",
    )
    assert stats.rows == 24 and len(read_features(out)[0]) == 24
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))  # the stale temporary is gone


def test_full_disk_while_publishing_tables_keeps_the_previous_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_custom_dataset(tmp_path / "custom")
    root = tmp_path / "data"
    assert materialize(DATA, root, dataset=register_custom(root, folder)).success
    before = load_dataset_table(root, "custom", "captions")

    write_custom_dataset(tmp_path / "custom", {0: ["an entirely new caption"]})
    real_write = pq.write_table
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second of the four tables fails half-way
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    result = materialize(DATA, root, dataset=register_custom(root, folder), raise_on_error=False)
    assert not result.success
    monkeypatch.undo()
    pd.testing.assert_frame_equal(before, load_dataset_table(root, "custom", "captions"))
    assert not [p for p in (root / "tables").iterdir() if p.name.startswith(".")]


def test_failed_feature_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "text_mean.parquet"
    with FeatureWriter(path, {"caption_id": pa.string()}, 3) as writer:
        writer.write({"caption_id": ["a", "b"]}, np.ones((2, 3), np.float32))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):  # noqa: PT012 - the failure happens inside the stream
        with FeatureWriter(path, {"caption_id": pa.string()}, 3) as writer:
            writer.write({"caption_id": ["c"]}, np.zeros((1, 3), np.float32))
            monkeypatch.setattr(pq.ParquetWriter, "write_batch", fail)
            writer.write({"caption_id": ["d"]}, np.zeros((1, 3), np.float32))
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".text_mean.parquet.tmp-*"))


def test_nan_features_block_training(tmp_path: Path) -> None:
    root = tmp_path / "data"
    features = [*DATA, "word_vectors", "text_features", "image_features"]
    with dg.instance_for_test() as instance:
        assert materialize(features, root, instance=instance).success
        path = next((root / "features" / "synthetic").glob("text_*.parquet"))
        table = pq.read_table(path)
        values = table.column("feature").combine_chunks().flatten().to_numpy().copy()
        values[5] = np.nan
        dim = table.schema.field("feature").type.list_size
        column = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim)
        index = table.schema.get_field_index("feature")
        pq.write_table(table.set_column(index, "feature", column), path)

        result = dg.materialize(
            assets=[*ALL_ASSETS, *ALL_CHECKS],
            selection=dg.AssetSelection.assets("image_sentence_embedding_net")
            | dg.AssetSelection.checks_for_assets("text_features"),
            resources={
                "storage": TwobranchStorage(data_root=str(root)),
                "compute": ComputeSettings(device="cpu", num_workers=0),
            },
            run_config={
                "ops": {
                    "image_sentence_embedding_net": {
                        "config": {
                            "epochs": 1,
                            "batch_images": 20,
                            "hidden_dim": 16,
                            "embed_dim": 8,
                        }
                    }
                }
            },
            instance=instance,
            raise_on_error=False,
            partition_key="synthetic",
        )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["text_features_valid"].passed
    assert "NaN or Inf" in checks["text_features_valid"].description
    trained = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "image_sentence_embedding_net" not in trained
    assert not (root / "checkpoints").exists()


def _tiny_split(image_dim: int, text_dim: int) -> ImageSentenceSplit:
    rng = np.random.default_rng(0)
    return ImageSentenceSplit(
        data=ImageSentenceData(
            rng.normal(size=(4, image_dim)).astype(np.float32),
            rng.normal(size=(8, text_dim)).astype(np.float32),
            np.repeat(np.arange(4), 2),
        ),
        image_ids=np.array(["a", "b", "c", "d"]),
        caption_ids=np.array([str(i) for i in range(8)]),
    )


def _trained_checkpoint(tmp_path: Path) -> Path:
    from ops.training.config import TrainConfig
    from ops.training.trainer import train

    split = _tiny_split(6, 5)
    config = TrainConfig(epochs=1, batch_images=2, hidden_dim=8, embed_dim=4, device="cpu")
    return train(config, split.data, split.data, tmp_path / "ckpt").best_checkpoint


def test_feature_dimension_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = _trained_checkpoint(tmp_path)
    assert evaluate_retrieval_single(checkpoint, _tiny_split(6, 5), "all", "cpu").result.metrics
    with pytest.raises(ValueError, match="dimension 6/5, but the features given have 7/5"):
        evaluate_retrieval_single(checkpoint, _tiny_split(7, 5), "all", "cpu")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo owned > /tmp/twobranch-owned",))


def test_foreign_and_tampered_checkpoints_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "twobranch", "model": Payload()}, foreign)
    with pytest.raises(CheckpointError, match="refused"):
        evaluate_retrieval_single(foreign, _tiny_split(6, 5), "all", "cpu")
    assert not Path("/tmp/twobranch-owned").exists()

    tampered = tmp_path / "tampered.pt"
    data = _trained_checkpoint(tmp_path).read_bytes()
    tampered.write_bytes(data[: len(data) - 200])  # the archive's index is cut off
    with pytest.raises(CheckpointError, match="tampered.pt: refused"):
        evaluate_retrieval_single(tampered, _tiny_split(6, 5), "all", "cpu")


def test_ui_binds_to_loopback_by_default() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "ui"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    line = next(line for line in dry_run.stdout.splitlines() if "dagster dev" in line)
    assert "-h 127.0.0.1" in line
