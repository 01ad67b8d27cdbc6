"""The settings a user gives one training run, derived from :class:`TrainConfig`'s fields.

The orchestrator (the Dagster config of the training assets) is built from
:func:`settings_fields`, so every hyper-parameter, its default and its range are written once,
in ``TrainConfig``. What differs: the task, network and device are set by the caller, ``lr``
and ``hidden_dim`` left unset take the network's default, and ``val_max_images`` trims the
validation data rather than configuring the trainer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo

from ops.setting_sources import source
from ops.training.config import Network, Task, TrainConfig

SET_BY_CALLER = frozenset({"task", "network", "device"})
NETWORK_DEFAULTS: dict[str, dict[str, Any]] = {
    # TrainConfig's own defaults are the embedding network's.
    "embedding": {name: TrainConfig.model_fields[name].default for name in ("lr", "hidden_dim")},
    "similarity": {"lr": 5e-5, "hidden_dim": 1024},
}
PER_NETWORK = frozenset(NETWORK_DEFAULTS["embedding"])
DATA_SETTINGS: dict[str, tuple[Any, FieldInfo]] = {
    # The similarity network scores every pair, so its per-epoch validation is costly.
    "val_max_images": (
        int,
        Field(
            0,
            description=(
                "> 0: validate on the first N validation images only; a run validated so is "
                "compared for champion only with runs validated on the same images"
            ),
            json_schema_extra=source("project", "0 = the whole validation split"),
        ),
    ),
}
SETTINGS_DOC = (
    "Hyper-parameters; README's table of settings gives each default's source (paper, "
    "authors' code, lab code or project choice). ``lr`` and "
    "``hidden_dim`` left unset take the network's default (embedding 1e-4 / 2048, similarity "
    "5e-5 / 1024). ``val_max_images`` > 0 validates on the first N validation images only."
)


def _per_network(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The field made optional with no default, keeping its range (checked when set)."""
    unset = copy.copy(info)
    unset.default = None
    return info.annotation | None, unset


def settings_fields() -> dict[str, tuple[Any, FieldInfo]]:
    """``{name: (annotation, field)}`` for ``pydantic.create_model``, in TrainConfig's order."""
    fields: dict[str, tuple[Any, FieldInfo]] = {}
    for name, info in TrainConfig.model_fields.items():
        if name in SET_BY_CALLER:
            continue
        fields[name] = _per_network(info) if name in PER_NETWORK else (info.annotation, info)
    return fields | DATA_SETTINGS


def _trainer_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key not in DATA_SETTINGS}


def check_settings(settings: Mapping[str, Any]) -> None:
    """Raise TrainConfig's ``ValidationError`` for settings no network could train with
    (e.g. a dropout of 1 or more), before any data is read. (Settings that must agree with
    the neighborhood graph's are checked against it when the run starts.)"""
    values = {key: value for key, value in _trainer_values(settings).items() if value is not None}
    TrainConfig(**values)


def train_config_for(
    settings: Mapping[str, Any], task: Task, network: Network, device: str
) -> TrainConfig:
    """The run's TrainConfig: the settings, the network's defaults for what is unset."""
    values = _trainer_values(settings)
    for key, default in NETWORK_DEFAULTS[network].items():
        if values.get(key) is None:
            values[key] = default
    return TrainConfig(task=task, network=network, device=device, **values)
