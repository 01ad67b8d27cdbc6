"""Dagster config classes derived from the ops settings models.

Each stage's settings (every field, its default, its range, its description and the source of
its default) are declared once, in a pydantic model under ``ops``; the launchpad's config
class is built from that model's fields, and an asset turns the config it receives back into
the model with :func:`settings_from`. Validators of the model (field and model validators)
run when the config is checked, before the run starts.
"""

from __future__ import annotations

from typing import Any, TypeVar

import dagster as dg
import pydantic

Settings = TypeVar("Settings", bound=pydantic.BaseModel)


def dagster_config(
    settings: type[pydantic.BaseModel],
    name: str,
    module: str,
    fields: dict[str, tuple[Any, Any]] | None = None,
    doc: str | None = None,
) -> type[dg.Config]:
    """A ``dg.Config`` named ``name`` with ``settings``' fields (or ``fields``, when a stage
    shows the model's fields differently), which checks values by building ``settings``."""

    def _check(config: dg.Config) -> dg.Config:
        settings_from(config, settings)
        return config

    config = pydantic.create_model(
        name,
        __base__=dg.Config,
        __doc__=doc or settings.__doc__,
        __module__=module,
        __validators__={"_check_settings": pydantic.model_validator(mode="after")(_check)},
        **(
            fields
            if fields is not None
            else {field: (info.annotation, info) for field, info in settings.model_fields.items()}
        ),
    )
    config.settings_model = settings  # type: ignore[attr-defined]
    return config


def settings_from(config: dg.Config, settings: type[Settings]) -> Settings:
    """The stage's settings model from the config a step received."""
    return settings(**config.model_dump())
