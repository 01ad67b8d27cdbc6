"""A split's feature matrices as batches see them: on the device, or read from their files
batch by batch (through pinned staging buffers on CUDA)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ops.device import device_feature_budget, pin_memory_for
from ops.storage.row_files import RowSubset
from ops.training.data import ImageSentenceData, SplitData


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if pin_memory_for(device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class HostRows:
    """A feature matrix left where it is (a file, through :class:`RowSubset`): indexing with
    row numbers or a slice reads just those rows and hands them to ``device`` as a tensor,
    through a pinned staging buffer on CUDA. It answers the indexing and ``shape``/``device``
    that training and evaluation ask of a device tensor."""

    def __init__(self, rows: RowSubset, device: torch.device) -> None:
        self.rows = rows
        self.device = device
        self.shape = torch.Size(rows.shape)
        self._staging: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, slice):
            positions = np.arange(self.shape[0])[index]
        else:
            positions = torch.as_tensor(index).cpu().numpy()
        values = torch.from_numpy(self.rows.take(positions.reshape(-1)))
        if positions.ndim == 0:
            values = values[0]
        if not pin_memory_for(self.device):
            return values.to(self.device)
        return self._stage(values).to(self.device, non_blocking=True)

    def _stage(self, values: torch.Tensor) -> torch.Tensor:
        # One pinned buffer, grown to the largest batch seen; a copy out of it must finish
        # before the buffer is refilled, hence the synchronize.
        needed = values.numel()
        if self._staging is None or self._staging.numel() < needed:
            self._staging = torch.empty(needed, dtype=values.dtype).pin_memory()
        else:
            torch.cuda.current_stream(self.device).synchronize()
        staged = self._staging[:needed].view(values.shape)
        staged.copy_(values)
        return staged


def _placed(matrix: np.ndarray | RowSubset, device: torch.device) -> torch.Tensor | HostRows:
    if not isinstance(matrix, RowSubset):
        return _to_device(matrix, device)
    if device.type == "cuda" and matrix.nbytes <= device_feature_budget(device):
        return _to_device(matrix.take(), device)
    return HostRows(matrix, device)


@dataclass(frozen=True)
class DeviceFeatures:
    """A split's feature matrices as batches see them: on the device when they are in memory
    already or fit :func:`device_feature_budget` on a GPU, else left in their files and read
    batch by batch (:class:`HostRows`), so no whole split is copied into the process."""

    image_features: torch.Tensor | HostRows
    text_features: torch.Tensor | HostRows

    @classmethod
    def of(cls, data: SplitData, device: torch.device) -> DeviceFeatures:
        if isinstance(data, ImageSentenceData):
            return cls(_placed(data.image_features, device), _placed(data.text_features, device))
        return cls(_placed(data.region_features, device), _placed(data.phrase_features, device))

    @property
    def placement(self) -> str:
        """``device`` (whole matrices on the device) or ``gathered per batch`` (from files)."""
        gathered = any(isinstance(m, HostRows) for m in (self.image_features, self.text_features))
        return "gathered per batch" if gathered else "device"
