"""Settings of the retrieval index; the Dagster config of ``retrieval_index`` is built from
:class:`IndexSettings`' fields, so each setting and its default are written once, here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source

IndexType = Literal["flat", "ivf", "hnsw"]
# Engineering settings of the search service, none from the paper.
_PROJECT = source("project")


class IndexSettings(BaseModel):
    """``flat`` (default) is exact inner-product search: the ranking the evaluator scores.
    ``ivf`` (inverted lists over k-means cells) and ``hnsw`` (a proximity graph) are
    approximate, for collections where a full scan per query is too slow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index_type: IndexType = Field(
        "flat", description="flat (exact), ivf or hnsw (approximate)", json_schema_extra=_PROJECT
    )
    ivf_lists: int = Field(
        0,
        ge=0,
        description="ivf: k-means cells; 0 picks about sqrt(items), at most items/64",
        json_schema_extra=_PROJECT,
    )
    ivf_probe: int = Field(
        16, ge=1, description="ivf: cells visited per query (nprobe)", json_schema_extra=_PROJECT
    )
    hnsw_neighbors: int = Field(
        32, ge=2, description="hnsw: links per node (M)", json_schema_extra=_PROJECT
    )
    hnsw_ef_construction: int = Field(
        80, ge=1, description="hnsw: candidates while building", json_schema_extra=_PROJECT
    )
    hnsw_ef_search: int = Field(
        128, ge=1, description="hnsw: candidates while searching", json_schema_extra=_PROJECT
    )
    chunk_rows: int = Field(
        8192,
        ge=1,
        description="rows embedded and added per step (bounds the build's memory)",
        json_schema_extra=_PROJECT,
    )

    def search_parameters(self) -> dict[str, int]:
        """The settings a saved index needs again at query time."""
        if self.index_type == "ivf":
            return {"nprobe": self.ivf_probe}
        if self.index_type == "hnsw":
            return {"efSearch": self.hnsw_ef_search}
        return {}
