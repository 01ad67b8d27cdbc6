"""README's table of settings is the generator's, and every setting says where it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from ops.setting_sources import SOURCE_LABELS, source, source_of
from ops.settings_table import readme_table, settings_models, settings_table, with_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_table_is_the_generated_one() -> None:
    assert readme_table(README.read_text(encoding="utf-8")) == settings_table()


def test_every_setting_has_a_known_source() -> None:
    models = settings_models()
    assert {"training", "neighborhood_graph", "retrieval_index"} <= set(models)
    for stage, fields in models.items():
        for name, info in fields.items():
            found = source_of(info)
            assert found is not None, f"{stage}.{name}"
            assert found[0] in SOURCE_LABELS.values()


def test_table_rows_show_defaults_and_sources() -> None:
    rows = settings_table().splitlines()
    n_settings = sum(len(fields) for fields in settings_models().values())
    assert len(rows) == 2 + n_settings
    assert "| neighborhood_graph | `positive_iou` | `0.6` | lab code |" in settings_table()
    assert any(r.startswith("| training | `batch_norm_momentum` | `0.1` | project") for r in rows)


def test_rewriting_keeps_the_text_around_the_markers() -> None:
    text = README.read_text(encoding="utf-8")
    stale = text.replace("| lab code |", "| paper |", 1)
    assert stale != text and with_table(stale) == text
    with pytest.raises(ValueError, match="markers"):
        readme_table("no table here")


def test_a_source_must_be_one_of_the_four() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        source("blog")  # type: ignore[arg-type]
    assert source_of(Field(1)) is None
