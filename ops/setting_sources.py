"""Where a setting's default comes from, recorded on its pydantic field.

Every field of the settings models carries ``json_schema_extra=source(kind, note)``;
:mod:`ops.settings_table` turns them into README's table of settings, so a default and the
account of where it comes from are written once, beside each other.
"""

from __future__ import annotations

from typing import Literal

from pydantic.fields import FieldInfo

SourceKind = Literal["paper", "authors", "lab", "project"]
SOURCE_LABELS: dict[str, str] = {
    "paper": "paper",
    "authors": "authors' code",
    "lab": "lab code",
    "project": "project choice",
}


def source(kind: SourceKind, note: str = "") -> dict[str, str]:
    """The ``json_schema_extra`` of a settings field: its default's source and a short note."""
    if kind not in SOURCE_LABELS:
        raise ValueError(f"unknown source {kind!r}; use one of {', '.join(SOURCE_LABELS)}")
    return {"source": kind, "source_note": note}


def source_of(info: FieldInfo) -> tuple[str, str] | None:
    """``(source label, note)`` of a field, None when it has none."""
    extra = info.json_schema_extra
    if not isinstance(extra, dict) or extra.get("source") not in SOURCE_LABELS:
        return None
    return SOURCE_LABELS[str(extra["source"])], str(extra.get("source_note", ""))
