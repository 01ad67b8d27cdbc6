"""Feature rows read from their file on demand: the values equal the array's, subsets compose
without reading, and training on matrices larger than a memory allowance stays within it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ops.storage.row_files import NpyRowFile, RowSubset
from ops.training.data import ImageSentenceData
from ops.training.placement import DeviceFeatures, HostRows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def matrix_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    values = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    np.save(tmp_path / "m.npy", values)
    return tmp_path / "m.npy", values


def test_take_returns_the_rows_asked_for_in_their_order(matrix_file) -> None:
    path, values = matrix_file
    rows = np.array([49, 3, 4, 5, 3, 0, 20, 21])
    np.testing.assert_array_equal(NpyRowFile(path).take(rows), values[rows])
    assert NpyRowFile(path).take(np.zeros(0, np.int64)).shape == (0, 7)


def test_out_of_range_rows_and_non_matrices_are_refused(matrix_file, tmp_path: Path) -> None:
    path, _ = matrix_file
    with pytest.raises(IndexError, match="row 50 is out of range"):
        NpyRowFile(path).take(np.array([1, 50]))
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="not a C-order 2-D"):
        NpyRowFile(tmp_path / "cube.npy")


def test_subsets_compose_and_read_only_on_take(matrix_file) -> None:
    path, values = matrix_file
    subset = RowSubset(NpyRowFile(path))[10:40][np.array([0, 5, 29])][1:]
    assert subset.shape == (2, 7)
    np.testing.assert_array_equal(subset.take(), values[[15, 39]])
    np.testing.assert_array_equal(np.asarray(subset), values[[15, 39]])
    mask = np.arange(50) % 10 == 0
    np.testing.assert_array_equal(RowSubset(values)[mask].take(), values[mask])


def test_host_rows_answer_like_a_device_tensor(matrix_file) -> None:
    path, values = matrix_file
    data = ImageSentenceData(
        RowSubset(NpyRowFile(path), finite_checked=True),
        RowSubset(NpyRowFile(path))[np.repeat(np.arange(10), 5)],
        np.repeat(np.arange(10), 5),
    )
    features = DeviceFeatures.of(data, torch.device("cpu"))
    assert isinstance(features.image_features, HostRows) and features.placement != "device"
    picked = features.text_features[torch.tensor([7, 0])]
    np.testing.assert_array_equal(picked.numpy(), values[[1, 0]])
    np.testing.assert_array_equal(features.image_features[40:].numpy(), values[40:])
    assert features.image_features.shape == (50, 7)
    in_memory = DeviceFeatures.of(
        ImageSentenceData(values, values, np.arange(50)), torch.device("cpu")
    )
    assert in_memory.placement == "device"


def test_non_finite_rows_in_an_unchecked_subset_are_named(matrix_file, tmp_path: Path) -> None:
    _, values = matrix_file
    values[33, 2] = np.inf
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(ValueError, match=r"image_features holds NaN or Inf \(first at row 33\)"):
        ImageSentenceData(RowSubset(NpyRowFile(tmp_path / "bad.npy")), values, np.arange(50))


TRAIN_ON_FILES = """
import json, sys
import numpy as np
from ops.storage.row_files import NpyRowFile, RowSubset
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData
from ops.training.trainer import train

folder = sys.argv[1]
images = RowSubset(NpyRowFile(f"{folder}/images.npy"), finite_checked=True)
texts = RowSubset(NpyRowFile(f"{folder}/texts.npy"), finite_checked=True)


def status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


# Reset the peak (VmHWM) to what the process holds now, so imports' transient peaks don't
# count; from here on, building the split and training must not read the files in whole.
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
before = status("VmRSS")
data = ImageSentenceData(images, texts, np.repeat(np.arange(images.shape[0]), 5))
config = TrainConfig(epochs=1, batch_images=64, hidden_dim=64, embed_dim=32, device="cpu",
                     max_train_steps_per_epoch=40, early_stopping_patience=None)
result = train(config, data, None, f"{folder}/run")
after = status("VmHWM")
print(json.dumps({"before": before, "after": after, "epochs": len(result.epochs),
                  "placement": result.feature_placement}))
"""


def test_training_on_files_larger_than_the_allowance_stays_within_it(tmp_path: Path) -> None:
    # 440 MB of features; the process may grow by a quarter of that while training.
    n_images, dim = 6_000, 3_000
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(tmp_path / "images.npy", "w+", np.float32, (n_images, dim))
    texts = np.lib.format.open_memmap(tmp_path / "texts.npy", "w+", np.float32, (5 * n_images, dim))
    for start in range(0, n_images, 1_000):
        images[start : start + 1_000] = rng.normal(size=(1_000, dim))
        texts[5 * start : 5 * start + 5_000] = rng.normal(size=(5_000, dim))
    feature_bytes = images.nbytes + texts.nbytes
    del images, texts
    allowance = feature_bytes // 4
    script = subprocess.run(
        [sys.executable, "-c", TRAIN_ON_FILES, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    peak = json.loads(script.stdout.strip().splitlines()[-1])
    assert peak["epochs"] == 1 and peak["placement"] == "gathered per batch"
    growth = peak["after"] - peak["before"]
    assert growth < allowance, f"grew {growth / 2**20:.0f} MiB over {allowance / 2**20:.0f}"
