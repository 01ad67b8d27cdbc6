"""Settings of the retrieval evaluation stage: each field, its default and the source of its
default written once. The stage's Dagster config is built from this model (``assets``), and
:func:`ops.evaluation.retrieval.evaluate_retrieval_runs` takes it whole."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ops.metrics.protocol_names import PROTOCOLS
from ops.setting_sources import source


class RetrievalEvalSettings(BaseModel):
    """``rerank_k``: candidates per query that two-stage retrieval rescores as embedding score
    + w × similarity score (0 turns two-stage off), w being the one of ``two_stage_weights``
    (0 always included) with the best R-sum on ``tune_split``. ``protocols``: e.g. ``[1k,
    5fold_1k, 5k]`` for COCO; empty = by test-set size (5,000+ images: 5fold_1k and 5k;
    1,000: 1k; otherwise all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rerank_k: int = Field(
        20,
        ge=0,
        description="candidates per query that two-stage retrieval rescores (0: off)",
        json_schema_extra=source("project", "the paper gives no k"),
    )
    split: str = Field("test", description="the split evaluated", json_schema_extra=source("paper"))
    # The similarity network's logits are ~10× wider than the embedding's cosine scores,
    # hence the small end of the grid.
    two_stage_weights: list[float] = Field(
        [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
        description="weights of the similarity score tried on tune_split (0 always)",
        json_schema_extra=source("project"),
    )
    tune_split: str = Field(
        "val",
        description="the split the two-stage weight is chosen on",
        json_schema_extra=source("project", "never the test split"),
    )
    protocols: list[str] = Field(
        [],
        description="retrieval protocols; empty: by test-set size",
        json_schema_extra=source("paper", "Flickr30K 1k; COCO 1k, 5fold_1k and 5k"),
    )

    @field_validator("protocols")
    @classmethod
    def _known_protocols(cls, values: list[str]) -> list[str]:
        unknown = sorted(set(values) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; use some of {list(PROTOCOLS)}")
        return values
