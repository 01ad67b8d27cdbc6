"""The report's two-stage section: every weight tried is shown as written, so the small end of
the grid (0.001, 0.003) stays distinguishable."""

from __future__ import annotations

import re

from ops.evaluation.settings import RetrievalEvalSettings
from ops.report.html import two_stage_section


def _cells(html: str, column: int) -> list[str]:
    rows = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)  # the header row has a style
    return [re.findall(r"<td>(.*?)</td>", row, flags=re.S)[column].strip() for row in rows]


def test_two_stage_weights_keep_their_digits() -> None:
    grid = [
        {"weight": w, "rsum": 100.0 + i}
        for i, w in enumerate(RetrievalEvalSettings().two_stage_weights)
    ]
    section = two_stage_section(
        {
            "weight": 0.003,
            "rerank_k": 20,
            "tuned_on": "val",
            "val_rsum_single_stage": 100.0,
            "val_rsum_two_stage": 102.0,
            "grid": grid,
        }
    )
    weights = _cells(section, 0)
    assert weights == ["0", "0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1", "3", "10"]
    assert _cells(section, 2) == ["", "", "yes", "", "", "", "", "", "", ""]
    assert _cells(section, 1)[2] == "102.00"  # R-sums keep their two decimals
    assert "<b>w = 0.003</b>" in section
