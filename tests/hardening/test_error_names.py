"""Errors name the file and the way out: a truncated Parquet file (through the one reader), a
truncated checkpoint, and a full disk."""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from ops.data.dataset_store import load_dataset_table
from ops.features.checks import scan_features
from ops.features.feature_cache import feature_rows
from ops.graph.store import read_relation
from ops.storage.atomic import DiskFullError, write_text_atomic
from ops.storage.parquet_io import (
    FeatureWriter,
    ParquetReadError,
    head_features,
    iter_feature_batches,
    read_features,
    write_table,
)
from ops.storage.paths import dataset_table_file, result_file
from ops.storage.results_store import read_result
from ops.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

PROJECT = Path(__file__).resolve().parents[2]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _features(path: Path) -> Path:
    with FeatureWriter(path, {"caption_id": pa.string()}, 4) as writer:
        writer.write({"caption_id": ["a", "b", "c"]}, np.ones((3, 4), dtype=np.float32))
    return path


def test_a_truncated_captions_table_names_the_file(tmp_path: Path) -> None:
    """What the text_features step reads first: the dataset's captions table."""
    path = dataset_table_file(tmp_path, "photos", "captions")
    write_table(path, pd.DataFrame({"caption_id": ["a", "b"], "text": ["x", "y"]}))
    _truncate(path)
    with pytest.raises(ParquetReadError) as caught:
        load_dataset_table(tmp_path, "photos", "captions")
    message = str(caught.value)
    assert message.startswith(f"{path}: not a readable Parquet file")
    assert "delete it and materialize again" in message and "<Buffer>" not in message


READERS: dict[str, Callable[[Path], object]] = {
    "read_features": read_features,
    "head_features": head_features,
    "iter_feature_batches": lambda path: list(iter_feature_batches(path)),
    "scan_features": lambda path: scan_features(path, "caption_id"),
    "feature_rows": feature_rows,
    "read_relation": lambda path: read_relation(path, "image_sentence"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_names_a_truncated_file(tmp_path: Path, reader: str) -> None:
    path = _features(tmp_path / "features" / "text_mean.parquet")
    _truncate(path)
    with pytest.raises(ParquetReadError, match=re.escape(f"{path}: not a readable Parquet")):
        READERS[reader](path)


def test_a_truncated_result_file_is_named(tmp_path: Path) -> None:
    path = result_file(tmp_path, "champions", "some_run")
    write_table(path, pd.DataFrame({"run_id": ["some_run"]}))
    _truncate(path)
    with pytest.raises(ParquetReadError, match=re.escape(str(path))):
        read_result(tmp_path, "champions")


def test_parquet_is_read_through_one_module() -> None:
    """Direct Arrow or pandas Parquet reads would bring back errors that name no file."""
    direct = re.compile(
        r"pq\.(read_table|read_schema|ParquetFile|read_metadata)\(|pd\.read_parquet\("
    )
    offenders = [
        f"{path.relative_to(PROJECT)}:{number}"
        for package in ("ops", "assets", "models")
        for path in sorted((PROJECT / package).rglob("*.py"))
        if path.name != "parquet_io.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if direct.search(line)
    ]
    assert offenders == []


def _checkpoint(path: Path) -> Path:
    payload = {"format": "twobranch-checkpoint", "version": 1, "model": torch.zeros(1000)}
    return save_checkpoint(path, payload)


def test_a_truncated_last_checkpoint_says_which_file_to_delete(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "checkpoints" / "run-a" / "last.pt")
    _truncate(path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused to load")
    assert f"to recover, delete {path}: the run then starts again from its first epoch" in message


def test_a_bad_best_checkpoint_says_how_to_retrain(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "run-a" / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert f"delete the run's folder {path.parent} and materialize its training asset" in str(
        caught.value
    )


def _full_disk(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "datasets.json"
    write_text_atomic(target, "previous")
    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    with pytest.raises(DiskFullError, match=re.escape(f"while writing {target}")) as caught:
        write_text_atomic(target, "next")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["datasets.json"]


def test_a_full_disk_while_saving_a_checkpoint_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run-a" / "last.pt"
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(DiskFullError, match=re.escape(f"while writing {path}")):
        _checkpoint(path)
    assert not path.exists()


@pytest.mark.parametrize("where", ["write", "close"])
def test_a_full_disk_while_writing_features_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Arrow reports a full disk in its message, without an errno."""
    import pyarrow.parquet as pq

    def arrow_full_disk(*args: object, **kwargs: object) -> None:
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    path = tmp_path / "features" / "image_x.parquet"
    monkeypatch.setattr(
        pq.ParquetWriter, "write_batch" if where == "write" else "close", arrow_full_disk
    )
    with pytest.raises(DiskFullError, match=re.escape(f"while writing {path}")):
        _features(path)
    assert not path.exists() and list(path.parent.iterdir()) == []
