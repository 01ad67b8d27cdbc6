"""The HTML report: one self-contained file (PNG plots embedded) per evaluation."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ops.storage.atomic import write_text_atomic

# METHOD.md "Reported results": (system, dataset, i2t R@1/5/10, t2i R@1/5/10); None = not
# reported.
PUBLISHED_RETRIEVAL = [
    ("CVPR'16 embedding (VGG + HGLMM)", "Flickr30K", (40.3, None, None), (29.7, None, None)),
    ("CVPR'16 embedding", "MSCOCO 1K", (50.1, None, None), (39.6, 75.2, None)),
    ("TPAMI embedding (reported by others)", "MSCOCO 1K", (54.9, None, None), (43.3, None, None)),
    (
        "lab fork (ResNet-152 + mean word vectors)",
        "Flickr30K",
        (61.7, 86.5, 93.2),
        (45.6, 76.2, 85.3),
    ),
    ("lab fork", "MSCOCO 1K", (68.7, 93.5, 97.4), (54.5, 85.6, 93.3)),
    ("CCA on HGLMM FV (Klein et al.)", "Flickr30K", (34.4, 61.0, 72.3), (24.4, 52.1, 65.6)),
]
PUBLISHED_LOCALIZATION = [
    ("TPAMI similarity network", "Flickr30K Entities", 51.05),
    ("TPAMI embedding network", "Flickr30K Entities", 51.03),
    ("CVPR'16 embedding", "Flickr30K Entities", 43.89),
]


def img_tag(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


@dataclass
class ReportContent:
    title: str
    runs: pd.DataFrame
    retrieval: pd.DataFrame
    localization: pd.DataFrame | None  # None: the dataset has no phrase task
    sections: list[tuple[str, str]] = field(default_factory=list)  # (heading, html)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(
        index=False, float_format=lambda v: f"{v:.2f}", border=0, classes="t", na_rep="–"
    )


def published_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    retrieval = pd.DataFrame(
        [
            {
                "system": s,
                "dataset": d,
                "i2t R@1": i[0],
                "i2t R@5": i[1],
                "i2t R@10": i[2],
                "t2i R@1": t[0],
                "t2i R@5": t[1],
                "t2i R@10": t[2],
            }
            for s, d, i, t in PUBLISHED_RETRIEVAL
        ]
    )
    localization = pd.DataFrame(PUBLISHED_LOCALIZATION, columns=["system", "dataset", "accuracy"])
    return retrieval, localization


def two_stage_section(two_stage: Mapping) -> str:
    """Single- vs two-stage R-sum on the validation split for each weight tried, and the
    weight used on the test split."""
    grid = pd.DataFrame(two_stage["grid"])
    grid["chosen"] = ["yes" if w == two_stage["weight"] else "" for w in grid["weight"]]
    # Weights span orders of magnitude (0.001 … 10): shown as written, not to two decimals.
    grid["weight"] = [f"{w:g}" for w in grid["weight"]]
    summary = (
        f"<p>Two-stage score = embedding score + w × similarity score over the embedding "
        f"network's top {int(two_stage['rerank_k'])} candidates per query; w chosen on the "
        f"{html.escape(str(two_stage['tuned_on']))} split: <b>w = {two_stage['weight']:g}</b> "
        f"(R-sum {two_stage['val_rsum_two_stage']:.2f} vs single-stage "
        f"{two_stage['val_rsum_single_stage']:.2f} at w = 0). The test-split numbers are the "
        "<code>two_stage_k…</code> rows of the retrieval table.</p>"
    )
    per_protocol = two_stage.get("per_protocol", {})
    if len(per_protocol) > 1:
        chosen = ", ".join(f"{html.escape(p)}: w = {w:g}" for p, w in per_protocol.items())
        summary += (
            "<p>Each test protocol uses the weight chosen under the same protocol on "
            f"validation (where it has the images for it): {chosen}.</p>"
        )
    return summary + _table(grid.rename(columns={"rsum": "validation R-sum"}))


def render_report(content: ReportContent) -> str:
    published_retrieval, published_localization = published_tables()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(content.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table.t{border-collapse:collapse;font-size:13px;margin:.5em 0}"
        "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "h2{border-bottom:2px solid #4c72b0;padding-bottom:3px}img{max-width:100%}</style>",
        f"</head><body><h1>{html.escape(content.title)}</h1>",
        "<h2>Training runs</h2>",
        _table(content.runs),
        "<h2>Retrieval (this run)</h2>",
        _table(content.retrieval),
        "<h3>Published numbers (full-size datasets)</h3>",
        _table(published_retrieval),
    ]
    if content.localization is not None:
        parts += [
            "<h2>Phrase localization (this run)</h2>",
            _table(content.localization),
            "<h3>Published numbers</h3>",
            _table(published_localization),
        ]
    for heading, body in content.sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", body]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: Path, content: ReportContent) -> Path:
    write_text_atomic(path, render_report(content))
    return path
