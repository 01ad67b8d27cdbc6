"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors, dicts, lists and
plain scalars only. Writes are atomic; a file holding anything else is refused."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ops.storage.atomic import atomic_path
from ops.training.config import TrainConfig

CHECKPOINT_FORMAT = "twobranch-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = (
    "format",
    "version",
    "config",
    "model_dims",
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "best_val_score",
    "best_epoch",
    "epochs_without_improvement",
    "stopped_early",
    "history",
    "rng",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, foreign, or for another run."""


def recovery(path: Path) -> str:
    """What to do about an unusable checkpoint file, in words."""
    if path.name == "last.pt":
        return (
            f"to recover, delete {path}: the run then starts again from its first epoch "
            "(a resumed run needs an intact last.pt)"
        )
    return (
        f"to recover, delete the run's folder {path.parent} and materialize its training asset "
        "again, which retrains it"
    )


# ---------------------------------------------------------------------------------------------
# Random number generator state as tensors and plain values


def capture_rng_state() -> dict[str, Any]:
    """Torch CPU (and CUDA, when initialized), NumPy global and Python ``random`` states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": [int(v) for v in internal],
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------
# Files


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (checked to load back under ``weights_only``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; refuse anything that is not ours."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        AttributeError,
        TypeError,
        OSError,  # a truncated or corrupted archive
    ) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"{path}: refused to load — truncated, corrupt or not a plain-tensor twobranch "
            f"checkpoint (weights_only=True rejected it: {detail}); {recovery(path)}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a twobranch checkpoint (no {CHECKPOINT_FORMAT!r} tag); {recovery(path)}"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')!r}, expected "
            f"{CHECKPOINT_VERSION}; {recovery(path)}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; {recovery(path)}")
    return payload


def config_of(payload: dict[str, Any], path: str | Path = "<checkpoint>") -> TrainConfig:
    try:
        return TrainConfig.from_json(payload["config"])
    except ValueError as error:
        raise CheckpointError(f"{path}: stored config is invalid: {error}") from error
