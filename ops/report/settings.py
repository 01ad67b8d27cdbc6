"""Settings of the report stage: each field, its default and the source of its default
written once. The stage's Dagster config is built from this model (``assets``), and
:func:`ops.report.build.build_report` takes it whole."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source


class ReportSettings(BaseModel):
    """The report's galleries: how many test captions are shown with their retrieved images,
    and how many test phrases with their localized boxes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gallery_captions: int = Field(
        4,
        ge=0,
        description="test captions shown with their top retrieved images",
        json_schema_extra=source("project"),
    )
    gallery_phrases: int = Field(
        6,
        ge=0,
        description="test phrases shown with their top-scored boxes",
        json_schema_extra=source("project"),
    )
