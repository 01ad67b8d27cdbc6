"""A saved text encoder encodes new text exactly as the fitted one: every method, word
transform and PCA kind; a file that is not one, or does not match, is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ops.data.tokenize import tokenize
from ops.features.text.encoder_store import (
    TextEncoderError,
    encoder_path,
    load_text_encoders,
    save_text_encoders,
)
from ops.features.text.settings import TextFeatureSettings
from ops.features.text.text_features import fit_text_encoders
from ops.features.text.word_vectors import WordVectors

WORDS = "a man woman dog cat red blue green ball runs sits on the grass with big small".split()


def _vectors(dim: int = 6) -> WordVectors:
    matrix = np.random.default_rng(0).standard_normal((len(WORDS), dim)).astype(np.float32)
    return WordVectors({w: i for i, w in enumerate(WORDS)}, matrix, f"rand{dim}")


def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 10)))) for _ in range(n)]


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "mean"},
        {"method": "mean", "pca_dim": 4},
        {"method": "fisher", "fisher_components": 3},
        {"method": "fisher", "fisher_components": 3, "word_dim": 4, "pca_dim": 8},
        {"method": "fisher", "fisher_components": 2, "word_dim": 3, "word_transform": "ica"},
    ],
    ids=["mean", "mean-pca", "fisher", "fisher-pca-words-pca", "fisher-ica"],
)
def test_a_saved_encoder_encodes_new_text_exactly_as_the_fitted_one(
    tmp_path: Path, settings: dict
) -> None:
    fitted = fit_text_encoders(_sentences(300, 1), _vectors(), TextFeatureSettings(**settings))
    path = save_text_encoders(fitted, tmp_path / "text_x.encoder.npz")
    loaded = load_text_encoders(path)
    assert loaded.variant == fitted.variant and loaded.fingerprint() == fitted.fingerprint()
    queries = [tokenize(text) for text in [*_sentences(40, 2), "", "unknown words only"]]
    np.testing.assert_array_equal(loaded.encode(queries), fitted.encode(queries))


def test_the_encoder_file_sits_beside_its_features() -> None:
    path = encoder_path("/data/features/photos/text_mean_glove50.parquet")
    assert str(path) == "/data/features/photos/text_mean_glove50.encoder.npz"


def test_a_foreign_or_tampered_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TextEncoderError, match="re-materialize text_features"):
        load_text_encoders(tmp_path / "missing.encoder.npz")
    foreign = tmp_path / "foreign.encoder.npz"
    np.savez(foreign, something=np.zeros(3))
    with pytest.raises(TextEncoderError, match="not a twobranch text encoder"):
        load_text_encoders(foreign)
    fitted = fit_text_encoders(
        _sentences(100, 1), _vectors(), TextFeatureSettings(method="mean", pca_dim=3)
    )
    path = save_text_encoders(fitted, tmp_path / "text.encoder.npz")
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["pca_components"] = arrays["pca_components"] * 1.01  # edited after fitting
    np.savez(path, **arrays)
    with pytest.raises(TextEncoderError, match="does not match its fingerprint"):
        load_text_encoders(path)
