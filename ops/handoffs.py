"""What each pipeline step hands the next: one frozen model per hand-off, and ``Skipped``.

A step's output is stored between steps (pickled by the IO manager) and read by the steps
after it, which may run in another process, on another machine, or weeks later. Each model
here names exactly what its readers may rely on: unknown fields are refused, nothing can be
changed after it is made, and a value of the wrong kind fails the orchestrator's type check
at the step boundary instead of a key lookup deep inside a step.

A step that cannot apply to its dataset (the phrase task on a dataset without phrase boxes,
a model whose inputs changed since it was trained) hands on :class:`Skipped` with the reason
instead; each step after it that reads it hands the same reason on.

Field names are those of the files and tables they describe; paths are absolute strings.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Handoff(BaseModel):
    """Base of every hand-off: frozen, and closed to fields it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Skipped(Handoff):
    """A step that did not apply to ``dataset``, and why."""

    dataset: str
    reason: str


def first_skipped(*values: Handoff) -> Skipped | None:
    """The first of ``values`` that is ``Skipped``; None when none is."""
    return next((value for value in values if isinstance(value, Skipped)), None)


def skip_reason(*values: Handoff) -> str | None:
    """The reason the first skipped one of ``values`` was skipped; None when none was."""
    skipped = first_skipped(*values)
    return None if skipped is None else skipped.reason


# --- data ---------------------------------------------------------------------------------


class RawDatasetFiles(Handoff):
    """``raw_dataset``: where the dataset's raw files are (the fields of
    ``ops.data.acquire.RawDataset``), with the dataset settings that reach the parse step."""

    dataset: str
    karpathy_json: str
    image_root: str
    entities_root: str | None
    declared_images: dict[str, int] | None
    min_captions_per_image: int
    seconds: float
    precomp_root: str | None
    restval_to_train: bool
    check_images: bool
    min_images_per_split: int


class PublishedTables(Handoff):
    """``images`` / ``captions`` / ``phrases``: the dataset's parsed tables, published
    together under ``tables_dir``; ``fingerprint`` hashes their content."""

    dataset: str
    tables_dir: str
    fingerprint: str


# --- features -----------------------------------------------------------------------------


class FeatureFile(Handoff):
    """A Parquet file of ``rows`` vectors of ``dim`` values, made the ``variant`` way."""

    dataset: str
    path: str
    rows: int
    dim: int
    variant: str


class WordVectorFile(FeatureFile):
    """``word_vectors``: one row per word of the dataset's vocabulary."""


class CnnFeatureFile(FeatureFile):
    """CNN vectors, extracted in shards and joined, stored as ``feature_dtype``."""

    feature_dtype: str


class ImageFeatureFile(CnnFeatureFile):
    """``image_features``: one vector per valid image."""


class RegionFeatureFile(CnnFeatureFile):
    """``region_features``: one vector per region proposal (and training ground-truth box)."""


class EncodedTextFile(FeatureFile):
    """Text vectors and the encoders that made them: ``fingerprint`` identifies the fitted
    encoders, ``encoder`` is their file (what a search query is encoded with)."""

    fingerprint: str
    encoder: str


class TextFeatureFile(EncodedTextFile):
    """``text_features``: one vector per caption."""


class PhraseFeatureFile(EncodedTextFile):
    """``phrase_features``: one vector per noun phrase."""


class RegionProposalFile(Handoff):
    """``region_proposals``: candidate boxes of ``images`` images, found by ``method``."""

    dataset: str
    path: str
    images: int
    method: str


class FeatureShard(Handoff):
    """One shard of a sharded extraction: rows ``[start, stop)`` of ``total`` items, shard
    ``index`` of ``count``."""

    dataset: str
    index: int
    count: int
    start: int
    stop: int
    total: int


class RegionShard(FeatureShard):
    """A shard of region feature extraction: its items are the images of ``proposals``."""

    proposals: str


class ShardResult(Handoff):
    """What one shard step wrote: ``rows`` rows to ``path`` in ``seconds``; ``dim`` for
    feature shards, ``pooling`` for precomputed image features, ``filled`` for proposals
    (candidates from the sliding-window fill)."""

    shard: FeatureShard
    path: str
    rows: int
    seconds: float
    dim: int | None = None
    pooling: str | None = None
    filled: int = 0


# --- graph, training, evaluation, search, report ------------------------------------------


class NeighborhoodGraphFile(Handoff):
    """``neighborhood_graph``: where the graph is and what identifies it (``fingerprint``
    hashes its settings and every edge)."""

    dataset: str
    path: str
    fingerprint: str
    settings: dict[str, Any]
    edges: dict[str, int]


class TrainedModel(Handoff):
    """A finished training run: its checkpoint, the feature files (``features``, name →
    path) and graph it learned from with their ``fingerprints``, its best validation score
    and whether it became the champion of (task, network, dataset)."""

    run_id: str
    task: str
    network: str
    dataset: str
    checkpoint: str
    features: dict[str, str]
    # The graph's identity (fingerprint, settings) and path.
    graph: dict[str, Any]
    fingerprints: dict[str, str]
    best_epoch: int | None
    best_val_score: float | None
    best_val_metrics: dict[str, Any]
    champion: bool
    champion_reason: str
    validation_scope: str | None
    device: str
    feature_placement: str
    world_size: int


class RetrievalEvalSummary(Handoff):
    """``retrieval_eval``: the test evaluation's summary rows (``metrics``), Recall@K curves
    and the two-stage weight chosen on validation (None without two-stage retrieval)."""

    dataset: str
    split: str
    protocols: list[str]
    runs: dict[str, str]  # network → run_id
    metrics: list[dict[str, Any]]
    recall_curves: dict[str, list[float]]
    n_images: int
    n_captions: int
    two_stage: dict[str, Any] | None


class LocalizationEvalSummary(Handoff):
    """``localization_eval``: accuracy per network and per phrase type on the test split,
    beside the chance level of picking a random proposal."""

    dataset: str
    runs: dict[str, str]  # network → run_id
    summary: list[dict[str, Any]]
    per_type: list[dict[str, Any]]
    random_proposal_accuracy: float


class RetrievalIndexFolder(Handoff):
    """``retrieval_index``: the folder ``twobranch search`` answers from, built by ``run_id``."""

    dataset: str
    path: str
    run_id: str


class ReportFile(Handoff):
    """``report``: the HTML report, filed under ``report_id`` (the retrieval embedding run)."""

    path: str
    report_id: str
