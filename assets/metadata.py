"""Small builders for the metadata every asset shows in the Dagster UI."""

import base64

import dagster as dg
import numpy as np
import pandas as pd

from ops.storage.parquet_io import head_features


def preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    head = frame.head(rows)
    return dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "(empty)")


def feature_preview(path: str, rows: int = 5) -> dg.MetadataValue:
    """The first rows of a feature file: ids, each vector's L2 norm and its first values."""
    ids, matrix = head_features(path, rows)
    frame = ids.assign(
        norm=np.linalg.norm(matrix, axis=1).round(4),
        first_values=[", ".join(f"{value:.3f}" for value in row[:4]) for row in matrix],
    )
    return preview(frame, rows)


def counts_by(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if frame.empty:
        return {}
    return {str(k): int(v) for k, v in frame[column].value_counts().sort_index().items()}


def png_bytes_value(data: bytes) -> dg.MetadataValue:
    encoded = base64.b64encode(data).decode("ascii")
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")
