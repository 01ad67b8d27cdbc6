"""The fitted text encoder of a text feature file, saved beside it, so that a new text (a search
query) is encoded exactly as the file's rows were.

``features/<dataset>/text_<variant>.encoder.npz`` holds plain arrays only (loaded with
``allow_pickle=False``): the word vectors the features were computed with (the dataset's
vocabulary), the Fisher mixture and its word transform, and the PCA, plus a JSON header. The
scikit-learn transforms are rebuilt from their fitted arrays, and the fingerprints recorded at
save time are checked on load, so a file that does not reproduce the fitted encoder is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA, FastICA, IncrementalPCA

from ops.features.text.fisher import FisherVectorEncoder
from ops.features.text.text_features import TextEncoders
from ops.features.text.word_vectors import WordVectors
from ops.storage.atomic import atomic_path

ENCODER_FORMAT = "twobranch-text-encoder"
ENCODER_VERSION = 1
REDUCERS = {"PCA": PCA, "IncrementalPCA": IncrementalPCA, "FastICA": FastICA}


class TextEncoderError(ValueError):
    """An encoder file that is missing, foreign, or does not match what was fitted."""


def encoder_path(text_features: str | os.PathLike[str]) -> Path:
    """``text_<variant>.encoder.npz`` beside ``text_<variant>.parquet``."""
    path = Path(text_features)
    return path.with_name(f"{path.stem}.encoder.npz")


def _reducer_arrays(prefix: str, reducer: PCA | IncrementalPCA | FastICA) -> dict[str, Any]:
    arrays = {f"{prefix}_mean": reducer.mean_, f"{prefix}_components": reducer.components_}
    if not isinstance(reducer, FastICA):
        arrays[f"{prefix}_explained_variance"] = reducer.explained_variance_
    return arrays


def _reducer_header(reducer: PCA | IncrementalPCA | FastICA | None) -> dict[str, Any] | None:
    if reducer is None:
        return None
    return {"class": type(reducer).__name__, "whiten": reducer.whiten}


def save_text_encoders(encoders: TextEncoders, path: str | os.PathLike[str]) -> Path:
    """Write ``encoders`` (word vectors included) to ``path``, atomically."""
    fisher = encoders.fisher
    header = {
        "format": ENCODER_FORMAT,
        "version": ENCODER_VERSION,
        "method": encoders.method,
        "variant": encoders.variant,
        "fingerprint": encoders.fingerprint(),
        "train_rows": encoders.train_rows,
        "words": {"name": encoders.wv.name, "source": encoders.wv.source},
        "pca": _reducer_header(encoders.pca),
        "fisher": None,
    }
    arrays: dict[str, Any] = {
        "words": np.asarray(encoders.wv.words, dtype=np.str_),
        "word_matrix": encoders.wv.matrix,
    }
    if encoders.pca is not None:
        arrays |= _reducer_arrays("pca", encoders.pca)
    if fisher is not None:
        header["fisher"] = {
            "n_components": fisher.n_components,
            "pca_words": fisher.pca_words,
            "word_transform": fisher.word_transform,
            "seed": fisher.seed,
            "max_fit_words": fisher.max_fit_words,
            "transform": _reducer_header(fisher.transform_),
        }
        arrays |= {
            "fisher_weights": fisher.weights_,
            "fisher_means": fisher.means_,
            "fisher_variances": fisher.variances_,
        }
        if fisher.transform_ is not None:
            arrays |= _reducer_arrays("fisher_transform", fisher.transform_)
    arrays["header"] = np.asarray(json.dumps(header, sort_keys=True))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def _rebuild_reducer(
    header: dict[str, Any], arrays: Any, prefix: str
) -> PCA | IncrementalPCA | FastICA:
    """A fitted scikit-learn transform from its arrays (what ``transform`` reads)."""
    components = arrays[f"{prefix}_components"]
    reducer = REDUCERS[header["class"]](n_components=components.shape[0], whiten=header["whiten"])
    reducer.mean_ = arrays[f"{prefix}_mean"]
    reducer.components_ = components
    reducer.n_features_in_ = components.shape[1]
    if not isinstance(reducer, FastICA):
        reducer.explained_variance_ = arrays[f"{prefix}_explained_variance"]
        reducer.n_components_ = components.shape[0]
    return reducer


def _rebuild_fisher(header: dict[str, Any], arrays: Any, wv: WordVectors) -> FisherVectorEncoder:
    fisher = FisherVectorEncoder(
        header["n_components"],
        pca_words=header["pca_words"],
        seed=header["seed"],
        max_fit_words=header["max_fit_words"],
        word_transform=header["word_transform"],
    )
    if header["transform"] is not None:
        fisher.transform_ = _rebuild_reducer(header["transform"], arrays, "fisher_transform")
    fisher.weights_ = arrays["fisher_weights"]
    fisher.means_ = arrays["fisher_means"]
    fisher.variances_ = arrays["fisher_variances"]
    fisher.attach(wv)
    return fisher


def load_text_encoders(path: str | os.PathLike[str]) -> TextEncoders:
    """The encoder saved at ``path``; refused when it is not one or its fingerprint differs."""
    path = Path(path)
    if not path.exists():
        raise TextEncoderError(
            f"{path} does not exist: re-materialize text_features to save the fitted encoder"
        )
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        header = json.loads(str(arrays["header"]))
    except (OSError, ValueError, KeyError) as error:
        raise TextEncoderError(f"{path}: not a twobranch text encoder ({error})") from None
    if header.get("format") != ENCODER_FORMAT or header.get("version") != ENCODER_VERSION:
        raise TextEncoderError(f"{path}: not a version {ENCODER_VERSION} twobranch text encoder")
    words = [str(word) for word in arrays["words"]]
    wv = WordVectors(
        vocab={word: row for row, word in enumerate(words)},
        matrix=arrays["word_matrix"],
        name=header["words"]["name"],
        source=header["words"]["source"],
    )
    fisher = None if header["fisher"] is None else _rebuild_fisher(header["fisher"], arrays, wv)
    pca = None if header["pca"] is None else _rebuild_reducer(header["pca"], arrays, "pca")
    encoders = TextEncoders(header["method"], wv, fisher, pca, train_rows=header["train_rows"])
    if encoders.fingerprint() != header["fingerprint"]:
        raise TextEncoderError(f"{path}: the stored encoder does not match its fingerprint")
    return encoders
