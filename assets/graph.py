"""The neighborhood graph asset: positives and neighborhoods the losses are built on."""

import time

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from assets.metadata import png, preview  # noqa: E402
from assets.partitions import DATASETS  # noqa: E402
from assets.resources import TwobranchStorage  # noqa: E402
from assets.skips import skip_reason  # noqa: E402
from ops.dataset_store import load_dataset_table  # noqa: E402
from ops.graph import build_neighborhood_graph, degree_statistics, knn_edges  # noqa: E402
from ops.parquet_io import read_features  # noqa: E402
from ops.results_store import publish_catalogue, write_derived_table  # noqa: E402

GRAPH_GROUP = "graph"


class GraphConfig(dg.Config):
    """``positive_iou``: a region is a phrase's positive at this IoU with its box (lab: 0.6).
    ``knn_k`` > 0 adds feature-space nearest-neighbor edges between images (faiss when
    installed, exact chunked search otherwise)."""

    positive_iou: float = 0.6
    knn_k: int = 0


def _degree_histogram(edges: pd.DataFrame):
    relations = sorted(edges["relation"].unique())
    figure, axes = plt.subplots(1, len(relations), figsize=(3.2 * len(relations), 2.6))
    axes = [axes] if len(relations) == 1 else list(axes)
    for axis, relation in zip(axes, relations, strict=True):
        degree = edges[edges["relation"] == relation].groupby("source_id").size()
        axis.hist(degree, bins=min(30, max(1, degree.nunique())), color="#4c72b0")
        axis.set_title(relation, fontsize=9)
        axis.set_xlabel("degree")
    figure.tight_layout()
    return figure


@dg.asset(group_name=GRAPH_GROUP, kinds={"parquet", "duckdb"}, partitions_def=DATASETS)
def neighborhood_graph(
    config: GraphConfig,
    captions: dict,
    phrases: dict,
    region_proposals: dict,
    image_features: dict,
    storage: TwobranchStorage,
) -> dg.Output[dict]:
    """Image→sentence positives, sentence→sentence neighbors (same image), phrase→region
    positives (IoU ≥ threshold) and region→region neighbors (when the dataset has phrase
    boxes); queryable as ``neighbors``."""
    started = time.perf_counter()
    root, dataset = storage.root, captions["dataset"]
    regions_skipped = skip_reason(region_proposals)
    edges = build_neighborhood_graph(
        load_dataset_table(root, dataset, "captions"),
        load_dataset_table(root, dataset, "phrases"),
        None if regions_skipped else pd.read_parquet(region_proposals["path"]),
        dataset,
        positive_iou=config.positive_iou,
    )
    if config.knn_k > 0:
        ids, matrix = read_features(image_features["path"])
        knn = knn_edges(ids["image_id"].to_numpy(), matrix, config.knn_k, "knn_image", dataset)
        edges = pd.concat([edges, knn], ignore_index=True)
    path = write_derived_table(root, dataset, "neighbors", edges)
    publish_catalogue(root)
    stats = degree_statistics(edges)
    figure = _degree_histogram(edges)
    plot = png(figure)
    plt.close(figure)
    return dg.Output(
        {"dataset": dataset, "path": str(path), "edges": stats.edges},
        metadata={
            "rows": len(edges),
            "edges": dg.MetadataValue.json(stats.edges),
            "degrees": dg.MetadataValue.json(stats.degrees),
            "degree_histogram": plot,
            "preview": preview(edges),
            **({"phrase_edges": f"none: {regions_skipped}"} if regions_skipped else {}),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
