"""The graph on disk: ``graph/<dataset>/neighbors.parquet`` (the ``neighbors`` SQL view),
written block by block with its fingerprint and degree counts, and read back per relation."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ops.data.dataset_store import load_dataset_table
from ops.features.region_table import region_table
from ops.graph.build import GraphSettings, graph_edges
from ops.handoffs import NeighborhoodGraphFile
from ops.storage.atomic import atomic_path
from ops.storage.parquet_io import iter_batches, read_features, read_table
from ops.storage.paths import derived_table_file
from ops.storage.results_store import DERIVED_SCHEMAS, to_json

NEIGHBORS = "neighbors"
ROWS_PER_GROUP = 500_000


@dataclass
class GraphSummary:
    """What a written graph holds. ``fingerprint`` hashes the settings and every edge, so
    it changes exactly when the graph (or how it was built) changes; ``degree_counts`` is,
    per relation, how many sources have each out-degree."""

    path: Path
    fingerprint: str
    settings: dict
    edges: dict[str, int] = field(default_factory=dict)
    degree_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.edges.values())

    def degrees(self) -> dict[str, dict[str, float]]:
        """Per relation: number of sources, min / mean / max out-degree."""
        result = {}
        for relation, counts in self.degree_counts.items():
            degree = np.array(list(counts), dtype=np.float64)
            sources = np.array(list(counts.values()), dtype=np.float64)
            result[relation] = {
                "sources": int(sources.sum()),
                "min": float(degree.min()),
                "mean": round(float((degree * sources).sum() / sources.sum()), 3),
                "max": float(degree.max()),
            }
        return result

    def manifest(self, dataset: str) -> NeighborhoodGraphFile:
        """What the training assets read: where the graph is and what identifies it."""
        return NeighborhoodGraphFile(
            dataset=dataset,
            path=str(self.path),
            fingerprint=self.fingerprint,
            settings=dict(self.settings),
            edges=dict(self.edges),
        )


def write_graph(
    root: Path,
    dataset: str,
    settings: GraphSettings,
    blocks: Iterable[pd.DataFrame],
) -> GraphSummary:
    """Write the edge ``blocks`` (each holding every edge of its sources) atomically to the
    dataset's ``neighbors`` file, in row groups of at most ``ROWS_PER_GROUP`` edges."""
    started = time.perf_counter()
    schema = DERIVED_SCHEMAS[NEIGHBORS]
    path = derived_table_file(root, dataset, NEIGHBORS)
    settings_json = to_json(settings.model_dump(mode="json"))
    digest = hashlib.sha256(settings_json.encode())
    summary = GraphSummary(path=path, fingerprint="", settings=settings.model_dump(mode="json"))
    edges: Counter[str] = Counter()
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:

        def flush() -> None:
            if pending:
                frame = pd.concat(pending, ignore_index=True).assign(dataset=dataset)
                table = pa.Table.from_pandas(
                    frame[[f.name for f in schema]], schema=schema, preserve_index=False
                )
                writer.write_table(table)
                pending.clear()

        for block in blocks:
            if block.empty:
                continue
            digest.update(pd.util.hash_pandas_object(block, index=False).to_numpy().tobytes())
            for relation, group in block.groupby("relation", sort=True):
                edges[str(relation)] += len(group)
                degree = group.groupby("source_id", sort=False).size().value_counts()
                counts = summary.degree_counts.setdefault(str(relation), {})
                for value, sources in degree.items():
                    counts[int(value)] = counts.get(int(value), 0) + int(sources)
            pending.append(block)
            pending_rows += len(block)
            if pending_rows >= ROWS_PER_GROUP:
                flush()
                pending_rows = 0
        flush()
        if not edges:
            writer.write_table(schema.empty_table())
    summary.edges = dict(sorted(edges.items()))
    summary.fingerprint = digest.hexdigest()[:16]
    summary.seconds = time.perf_counter() - started
    return summary


def read_relation(path: str | Path, relation: str) -> pd.DataFrame:
    """``source_id, target_id, weight`` of one relation of a graph file."""
    columns = ["source_id", "target_id", "weight"]
    return read_table(path, columns, filters=[("relation", "=", relation)])


def graph_identity(graph: NeighborhoodGraphFile) -> dict[str, object]:
    """What a training run id takes from its graph: the settings and the content hash."""
    return {"fingerprint": graph.fingerprint, "settings": dict(graph.settings)}


def build_graph(
    root: Path,
    dataset: str,
    settings: GraphSettings,
    region_proposals: str | Path | None,
    image_features: str | Path | None = None,
    text_features: str | Path | None = None,
) -> GraphSummary:
    """Build the dataset's graph from its tables, its proposals file (None: no phrase task)
    and, for the kNN relations, its feature files; write it; return its summary."""
    started = time.perf_counter()
    regions = None if region_proposals is None else region_table(region_proposals)
    wants_knn = settings.knn_k > 0
    blocks = graph_edges(
        settings,
        load_dataset_table(root, dataset, "captions"),
        load_dataset_table(root, dataset, "phrases"),
        regions,
        read_features(image_features) if wants_knn and image_features else None,
        read_features(text_features) if wants_knn and text_features else None,
    )
    summary = write_graph(root, dataset, settings, blocks)
    summary.seconds = time.perf_counter() - started
    return summary


def graph_preview(path: str | Path, per_relation: int = 3) -> pd.DataFrame:
    """The first ``per_relation`` edges of each relation (for the asset's metadata)."""
    frames = []
    for batch in iter_batches(path):
        frame = batch.to_pandas()
        frames.append(frame.groupby("relation", sort=False).head(per_relation))
    if not frames:
        return DERIVED_SCHEMAS[NEIGHBORS].empty_table().to_pandas()
    return pd.concat(frames).groupby("relation", sort=False).head(per_relation)
