"""The neighborhood graph asset: the training split's positives and neighborhoods, which the
training assets learn from."""

import dagster as dg

from assets.handoff_types import typed_handoffs
from assets.metadata import png_bytes_value, preview
from assets.partitions import DATASETS
from assets.resources import TwobranchStorage
from assets.settings_config import dagster_config, settings_from
from ops.graph.build import GraphSettings, knn_method
from ops.graph.store import build_graph, graph_preview
from ops.handoffs import (
    ImageFeatureFile,
    NeighborhoodGraphFile,
    PublishedTables,
    RegionProposalFile,
    Skipped,
    TextFeatureFile,
)
from ops.report.plots import degree_histogram
from ops.storage.results_store import publish_catalogue

GRAPH_GROUP = "graph"

GraphConfig = dagster_config(GraphSettings, "GraphConfig", __name__)


@dg.asset(group_name=GRAPH_GROUP, kinds={"parquet", "duckdb"}, partitions_def=DATASETS)
@typed_handoffs
def neighborhood_graph(
    config: GraphConfig,
    captions: PublishedTables,
    phrases: PublishedTables | Skipped,
    region_proposals: RegionProposalFile | Skipped,
    image_features: ImageFeatureFile,
    text_features: TextFeatureFile,
    storage: TwobranchStorage,
) -> dg.Output[NeighborhoodGraphFile]:
    """The training split's image→sentence positives, sentence→sentence neighbors (same
    image), phrase→region positives (IoU ≥ ``positive_iou``) and region→region neighbors (when
    the dataset has phrase boxes), and with ``knn_k`` > 0 each training image's and sentence's
    nearest neighbors by feature. The training assets take their positives and neighborhoods
    from it; queryable as ``neighbors``."""
    root, dataset = storage.root, captions.dataset
    settings = settings_from(config, GraphSettings)
    regions_skipped = region_proposals.reason if isinstance(region_proposals, Skipped) else None
    summary = build_graph(
        root,
        dataset,
        settings,
        None if isinstance(region_proposals, Skipped) else region_proposals.path,
        image_features.path,
        text_features.path,
    )
    publish_catalogue(root)
    knn_items = {
        relation: summary.degrees().get(relation, {}).get("sources", 0)
        for relation in ("knn_image", "knn_sentence")
    }
    return dg.Output(
        summary.manifest(dataset),
        metadata={
            "rows": summary.rows,
            "edges": dg.MetadataValue.json(summary.edges),
            "degrees": dg.MetadataValue.json(summary.degrees()),
            "degree_histogram": png_bytes_value(degree_histogram(summary.degree_counts)),
            "preview": preview(graph_preview(summary.path), rows=20),
            "fingerprint": summary.fingerprint,
            "settings": dg.MetadataValue.json(summary.settings),
            "split": "train (no validation or test item is in the graph)",
            "knn_search": dg.MetadataValue.json(
                {relation: knn_method(settings, n) for relation, n in knn_items.items()}
            ),
            **({"phrase_edges": f"none: {regions_skipped}"} if regions_skipped else {}),
            "path": dg.MetadataValue.path(str(summary.path)),
            "seconds": round(summary.seconds, 2),
        },
    )
