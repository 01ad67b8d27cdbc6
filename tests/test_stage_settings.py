"""Every stage's Dagster config is built from its ops settings model: the same fields, the
same defaults, and the model's checks run when the config is checked."""

from __future__ import annotations

import importlib
import pkgutil

import dagster as dg
import pydantic
import pytest

import assets
from assets.settings_config import dagster_config, settings_from
from ops.training.settings import settings_fields


def _config_classes() -> dict[str, type[dg.Config]]:
    found: dict[str, type[dg.Config]] = {}
    for module_info in pkgutil.iter_modules(assets.__path__):
        module = importlib.import_module(f"assets.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, dg.Config)
                and not issubclass(value, dg.ConfigurableResource)
                and value.__module__.startswith("assets.")
            ):
                found[value.__name__] = value
    return found


def _default(info: pydantic.fields.FieldInfo) -> object:
    value = info.get_default(call_default_factory=True)
    # A nested section (training's ``distributed``) is a config on one side and a settings
    # model on the other: equal when their values are.
    return value.model_dump() if isinstance(value, pydantic.BaseModel) else value


def test_every_dagster_config_default_is_its_settings_model_default() -> None:
    configs = _config_classes()
    assert {"ImageFeatureConfig", "GraphConfig", "RetrievalIndexConfig", "TrainingConfig"} <= set(
        configs
    )
    for name, config in configs.items():
        if name == "TrainingConfig":
            expected = {field: info for field, (_, info) in settings_fields().items()}
            assert set(config.model_fields) == set(expected) | {"distributed"}
        else:
            model = getattr(config, "settings_model", None)
            assert model is not None, f"{name} is not built from an ops settings model"
            expected = dict(model.model_fields)
            assert set(config.model_fields) == set(expected), name
        for field, info in expected.items():
            got = _default(config.model_fields[field])
            assert got == _default(info), f"{name}.{field}: {got!r} != {_default(info)!r}"


class _Settings(pydantic.BaseModel):
    """A stage's settings."""

    size: int = pydantic.Field(3, ge=1)
    mode: str = "fast"

    @pydantic.field_validator("mode")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ("fast", "slow"):
            raise ValueError(f"unknown mode {value!r}")
        return value


def test_the_derived_config_refuses_what_the_model_refuses_and_converts_back() -> None:
    config_class = dagster_config(_Settings, "StageConfig", __name__)
    assert config_class.__doc__ == "A stage's settings."
    config = config_class(size=5)
    assert settings_from(config, _Settings) == _Settings(size=5, mode="fast")
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        config_class(size=0)
    # A field validator of the model, not copied onto the config, still runs.
    with pytest.raises(pydantic.ValidationError, match="unknown mode 'medium'"):
        config_class(mode="medium")
