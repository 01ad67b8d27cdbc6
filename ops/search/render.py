"""Search results as a text table, JSON (one object, or JSON lines for many queries) or a
self-contained HTML gallery (thumbnails embedded as JPEG data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence

from PIL import Image

from ops.search.engine import ImageQueryResult, TextQueryResult

Result = TextQueryResult | ImageQueryResult
THUMBNAIL_PX = 160


def to_json(results: Sequence[Result], lines: bool) -> str:
    """One indented JSON object for a single result; with ``lines``, one compact line each."""
    if lines:
        return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    (result,) = results
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def to_table(results: Sequence[Result]) -> str:
    out: list[str] = []
    for result in results:
        if isinstance(result, TextQueryResult):
            out.append(f"query: {result.query}")
            if result.error:
                out.append(f"  error: {result.error}")
            out.append(f"{'rank':>4}  {'score':>7}  {'split':<6} {'image_id':<20} path")
            for hit in result.hits:
                out.append(
                    f"{hit.rank:>4}  {hit.score:>7.4f}  {hit.split:<6} {hit.image_id:<20} "
                    f"{hit.path}"
                )
                out += [f"{'':>21}· {_shorten(caption, 90)}" for caption in hit.captions]
        else:
            out.append(f"image: {result.image}")
            out.append(f"{'rank':>4}  {'score':>7}  {'split':<6} {'image_id':<20} caption")
            for hit in result.hits:
                out.append(
                    f"{hit.rank:>4}  {hit.score:>7.4f}  {hit.split:<6} {hit.image_id:<20} "
                    f"{_shorten(hit.text, 90)}"
                )
        out.append("")
    return "\n".join(out)


def thumbnail_jpeg(path: str, size: int = THUMBNAIL_PX) -> bytes | None:
    """The image at ``path`` scaled to fit ``size``, as JPEG bytes; None if unreadable."""
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def thumbnail(path: str, size: int = THUMBNAIL_PX) -> str | None:
    """A JPEG data URI of the image at ``path`` scaled to fit ``size``; None if unreadable."""
    jpeg = thumbnail_jpeg(path, size)
    if jpeg is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _img(path: str, alt: str) -> str:
    uri = thumbnail(path)
    if uri is None:
        return f'<div class="missing">image unavailable: {html.escape(path)}</div>'
    return f'<img src="{uri}" alt="{html.escape(alt)}" title="{html.escape(path)}">'


def _text_section(result: TextQueryResult) -> str:
    parts = [f"<h2>{html.escape(result.query)}</h2>"]
    if result.error:
        parts.append(f'<p class="error">{html.escape(result.error)}</p>')
    parts.append('<div class="grid">')
    for hit in result.hits:
        captions = "".join(f"<li>{html.escape(c)}</li>" for c in hit.captions)
        parts.append(
            f"<figure>{_img(hit.path, hit.image_id)}<figcaption><b>#{hit.rank}</b> "
            f"{hit.score:.4f} · {html.escape(hit.split)} · {html.escape(hit.image_id)}"
            f"<ul>{captions}</ul></figcaption></figure>"
        )
    parts.append("</div>")
    return "\n".join(parts)


def _image_section(result: ImageQueryResult) -> str:
    rows = "".join(
        f"<tr><td>#{hit.rank}</td><td>{hit.score:.4f}</td><td>{html.escape(hit.split)}</td>"
        f"<td>{html.escape(hit.text)}</td><td>{_img(hit.path, hit.image_id)}</td></tr>"
        for hit in result.hits
    )
    return (
        f"<h2>Captions for {html.escape(result.image)}</h2>"
        f'<div class="query">{_img(result.image, "query image")}</div>'
        f"<table><tr><th>rank</th><th>score</th><th>split</th><th>caption</th>"
        f"<th>its image</th></tr>{rows}</table>"
    )


def to_html(results: Sequence[Result], title: str) -> str:
    sections = [
        _text_section(r) if isinstance(r, TextQueryResult) else _image_section(r) for r in results
    ]
    return "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
            ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{width:200px;margin:0}"
            "figcaption{font-size:12px}ul{padding-left:1.1em;margin:.3em 0}"
            "table{border-collapse:collapse;font-size:13px}td,th{padding:4px 8px;"
            "border-bottom:1px solid #ddd;text-align:left}.error{color:#b00}"
            ".missing{font-size:11px;color:#888}</style>",
            f"</head><body><h1>{html.escape(title)}</h1>",
            *sections,
            "</body></html>\n",
        ]
    )
