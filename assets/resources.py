"""Resources shared by every asset: where data lives and which device computes."""

import os
from pathlib import Path

import dagster as dg

from ops.storage.paths import DEFAULT_DATA_ROOT


class TwobranchStorage(dg.ConfigurableResource):
    """The data root (``TWOBRANCH_DATA``) holding raw data, features, checkpoints, results."""

    data_root: str = os.environ.get("TWOBRANCH_DATA", DEFAULT_DATA_ROOT)

    @property
    def root(self) -> Path:
        path = Path(self.data_root).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path


class ComputeSettings(dg.ConfigurableResource):
    """Device for feature extraction and training: ``auto`` picks CUDA when present."""

    device: str = os.environ.get("TWOBRANCH_DEVICE", "auto")
    num_workers: int = int(os.environ.get("TWOBRANCH_NUM_WORKERS", "2"))
