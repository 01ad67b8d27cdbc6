"""Resources shared by every asset: where data lives and which device computes.

An empty setting falls back to the environment of the run (``TWOBRANCH_DATA``,
``TWOBRANCH_DEVICE``, ``TWOBRANCH_NUM_WORKERS``), read when an asset uses the resource rather
than when the code location is imported; a value given in run config wins.
"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from ops.storage.paths import data_root

DEFAULT_NUM_WORKERS = 2


class TwobranchStorage(dg.ConfigurableResource):
    """The data root holding raw data, features, checkpoints and results."""

    data_root: str = Field("", description="Empty: $TWOBRANCH_DATA, else ./data.")

    @property
    def root(self) -> Path:
        path = data_root(self.data_root or None)
        path.mkdir(parents=True, exist_ok=True)
        return path


class ComputeSettings(dg.ConfigurableResource):
    """Device and loader workers for feature extraction and training."""

    device: str = Field(
        "",
        description="auto (CUDA when present), cpu, cuda or cuda:N; empty: $TWOBRANCH_DEVICE, "
        "else auto.",
    )
    num_workers: int | None = Field(
        None, ge=0, description=f"Unset: $TWOBRANCH_NUM_WORKERS, else {DEFAULT_NUM_WORKERS}."
    )

    @property
    def device_name(self) -> str:
        return self.device or os.environ.get("TWOBRANCH_DEVICE", "").strip() or "auto"

    @property
    def workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        chosen = os.environ.get("TWOBRANCH_NUM_WORKERS", "").strip()
        if not chosen:
            return DEFAULT_NUM_WORKERS
        if not chosen.isdigit():
            raise ValueError(f"TWOBRANCH_NUM_WORKERS={chosen!r}: give a whole number, 0 or more")
        return int(chosen)
