"""The retrieval evaluation's Dagster config runs its settings model's protocol check."""

from __future__ import annotations

import pydantic
import pytest

from assets.evaluation import RetrievalEvalConfig
from assets.settings_config import settings_from
from ops.evaluation.settings import RetrievalEvalSettings


def test_unknown_protocols_are_refused_before_the_run() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"unknown protocols \['2k'\]"):
        RetrievalEvalConfig(protocols=["1k", "2k"])
    config = RetrievalEvalConfig(protocols=["1k", "5fold_1k"], rerank_k=0)
    settings = settings_from(config, RetrievalEvalSettings)
    assert settings.protocols == ["1k", "5fold_1k"] and settings.rerank_k == 0
    assert settings.two_stage_weights[0] == 0.0  # single-stage is always among the weights
