"""The one matplotlib set-up of the project: figures drawn through the ``Figure`` API and saved
as PNG bytes.

``Figure`` renders with its own Agg canvas, so no module has to switch pyplot's global backend
at import (which would have to happen before any other matplotlib import), and figures need no
closing: they are freed like any other object.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """Like ``pyplot.subplots``: a new figure and its axes (``figsize`` and ``Figure.subplots``
    keywords such as ``squeeze``)."""
    figure = Figure(figsize=kwargs.pop("figsize", None))
    return figure, figure.subplots(nrows, ncols, **kwargs)


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes, trimmed to its drawn area."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
