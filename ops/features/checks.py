"""Checks of feature files, streamed row group by row group (memory stays bounded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ops.data.checks import CheckOutcome
from ops.storage.parquet_io import FEATURE_COLUMN, parquet_file, read_row_group


@dataclass
class FeatureScan:
    rows: int
    dim: int
    nonfinite_rows: int
    duplicate_ids: int
    first_bad_ids: list[str]


def scan_features(path: str | Path, id_column: str) -> FeatureScan:
    parquet = parquet_file(path)
    dim = parquet.schema_arrow.field(FEATURE_COLUMN).type.list_size
    rows = nonfinite = 0
    seen: set[str] = set()
    duplicates = 0
    first_bad: list[str] = []
    for group in range(parquet.num_row_groups):
        table = read_row_group(parquet, path, group, [id_column, FEATURE_COLUMN])
        ids = table.column(id_column).to_pylist()
        matrix = table.column(FEATURE_COLUMN).combine_chunks().flatten().to_numpy().reshape(-1, dim)
        bad = ~np.isfinite(matrix).all(axis=1)
        nonfinite += int(bad.sum())
        first_bad += [ids[i] for i in np.flatnonzero(bad)[: 5 - len(first_bad)]]
        for item in ids:
            if item in seen:
                duplicates += 1
            seen.add(item)
        rows += len(ids)
    return FeatureScan(rows, dim, nonfinite, duplicates, first_bad)


def check_feature_file(
    path: str | Path, id_column: str, expected_rows: int, expected_dim: int
) -> CheckOutcome:
    """No NaN/Inf, the configured dimension, and exactly one row per item."""
    scan = scan_features(path, id_column)
    problems = []
    if scan.nonfinite_rows:
        problems.append(f"{scan.nonfinite_rows} rows hold NaN or Inf (e.g. {scan.first_bad_ids})")
    if scan.dim != expected_dim:
        problems.append(f"dimension {scan.dim}, configured {expected_dim}")
    if scan.duplicate_ids:
        problems.append(f"{scan.duplicate_ids} duplicate {id_column} values")
    if scan.rows != expected_rows:
        problems.append(f"{scan.rows} rows for {expected_rows} items")
    return CheckOutcome(
        passed=not problems,
        description=f"{Path(path).name}: "
        + ("; ".join(problems) or "finite, right dimension, one row per item"),
        details={"rows": scan.rows, "dim": scan.dim, "nonfinite_rows": scan.nonfinite_rows},
    )
