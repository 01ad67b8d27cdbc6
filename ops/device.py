"""Device choice shared across the project: CUDA when present, the same code on CPU."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"``."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
        return device
    raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def device_for(tensor: object, device: torch.device | str | None) -> torch.device:
    """``device`` when given (a name as in :func:`resolve_device`), else where ``tensor`` already
    is, so data is not moved unasked; CPU for anything that is not a tensor."""
    if device is None:
        return tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    return resolve_device(device)


@contextlib.contextmanager
def autocast_context(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA; a no-op on CPU, where bf16 convolutions are slow and inexact."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def pin_memory_for(device: torch.device) -> bool:
    """Pinned host memory only helps host-to-GPU copies."""
    return device.type == "cuda"


# Bytes of one split's features that may live on a GPU, as GB: unset, half the GPU's memory.
FEATURE_BUDGET_ENV = "TWOBRANCH_GPU_FEATURE_BUDGET_GB"


def device_feature_budget(device: torch.device) -> int:
    """How many bytes of one feature matrix may be copied whole onto ``device``: on a GPU
    ``$TWOBRANCH_GPU_FEATURE_BUDGET_GB``, else half its memory; on the CPU none (features
    stay in their files and batches read their rows)."""
    if device.type != "cuda":
        return 0
    chosen = os.environ.get(FEATURE_BUDGET_ENV, "").strip()
    if not chosen:
        return torch.cuda.get_device_properties(device).total_memory // 2
    try:
        gigabytes = float(chosen)
    except ValueError:
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes < 0:
        raise ValueError(f"{FEATURE_BUDGET_ENV}={chosen!r}: give a size in GB, 0 or more")
    return int(gigabytes * 2**30)
