import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA, IncrementalPCA

from ops.data.tokenize import tokenize
from ops.features.text import fisher as fisher_module
from ops.features.text import pca as text_pca
from ops.features.text.fisher import FisherVectorEncoder, power_l2_normalize
from ops.features.text.pca import fit_pca
from ops.features.text.settings import TextFeatureSettings, WordVectorSettings
from ops.features.text.text_features import (
    TextEncoders,
    build_text_features,
    dataset_vocabulary,
    fit_text_encoders,
    mean_word_vectors,
)
from ops.features.text.word_vectors import WordVectors, load_word_vectors
from ops.storage.parquet_io import read_features

WORDS = "a man woman dog cat red blue green ball runs sits on the grass with big small".split()


def random_vectors(dim: int = 3, seed: int = 0) -> WordVectors:
    matrix = np.random.default_rng(seed).standard_normal((len(WORDS), dim)).astype(np.float32)
    return WordVectors({w: i for i, w in enumerate(WORDS)}, matrix, f"rand{dim}")


def random_sentences(n: int, seed: int, words: list[str] = WORDS) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 10)))) for _ in range(n)]


# --- mean word vectors ----------------------------------------------------------------------


def test_mean_features_exact_values_and_zero_rows(tmp_path):
    wv = WordVectors(
        {"red": 0, "ball": 1}, np.array([[1.0, 0.0], [0.0, 3.0]], dtype=np.float32), "hand"
    )
    texts = pd.DataFrame(
        {
            "caption_id": ["i1#0", "i1#1", "i2#0", "i2#1"],
            "image_id": ["i1", "i1", "i2", "i2"],
            "text": ["Red ball!", "unknown words only", "  ", "ball ball red zebra"],
            "split": ["train", "train", "val", "test"],
        }
    )
    out = tmp_path / "text_mean_hand.parquet"
    stats = build_text_features(
        texts, ["caption_id", "image_id"], out, TextEncoders("mean", wv), chunk_rows=4096
    )
    ids, matrix = read_features(out)

    assert ids.columns.tolist() == ["caption_id", "image_id", "split"]
    assert ids["caption_id"].tolist() == texts["caption_id"].tolist()
    assert ids["split"].tolist() == texts["split"].tolist()
    assert matrix.shape == (4, 2) and matrix.dtype == np.float32
    # mean([1,0],[0,3]) = [0.5, 1.5] -> normalized [1, 3] / sqrt(10)
    np.testing.assert_allclose(matrix[0], np.array([1.0, 3.0]) / np.sqrt(10.0), rtol=1e-6)
    np.testing.assert_array_equal(matrix[1], [0.0, 0.0])
    np.testing.assert_array_equal(matrix[2], [0.0, 0.0])
    np.testing.assert_allclose(matrix[3], np.array([1.0, 6.0]) / np.sqrt(37.0), rtol=1e-6)
    assert stats.rows == 4 and stats.dim == 2
    assert stats.empty_after_tokenize == 1 and stats.no_known_words == 1
    assert stats.tokens == {"train": 5, "val": 0, "test": 4}
    assert stats.oov_rate["val"] == 0.0
    assert stats.oov_rate["train"] == pytest.approx(3 / 5)
    assert stats.oov_rate["test"] == pytest.approx(1 / 4)


def test_build_streams_in_chunks_and_reports_progress(tmp_path):
    wv = random_vectors(4)
    texts = pd.DataFrame(
        {
            "phrase_id": [f"c{i}:0" for i in range(11)],
            "caption_id": [f"c{i}" for i in range(11)],
            "image_id": [str(i // 5) for i in range(11)],
            "text": random_sentences(11, seed=3),
            "split": ["train"] * 11,
        }
    )
    seen: list[tuple[int, int]] = []
    out = tmp_path / "phrase.parquet"
    build_text_features(
        texts,
        ["phrase_id", "caption_id", "image_id"],
        out,
        TextEncoders("mean", wv),
        chunk_rows=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    ids, matrix = read_features(out)
    assert seen == [(4, 11), (8, 11), (11, 11)]
    assert ids["phrase_id"].tolist() == texts["phrase_id"].tolist()
    np.testing.assert_allclose(
        matrix, mean_word_vectors([wv.lookup(tokenize(t))[0] for t in texts["text"]], wv)
    )
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-6)


# --- Fisher vectors ---------------------------------------------------------------------------


def literal_fisher_vector(encoder: FisherVectorEncoder, wv: WordVectors, indices) -> np.ndarray:
    """The textbook formula, one word and one component at a time."""
    weights, means, variances = encoder.weights_, encoder.means_, encoder.variances_
    n_components, dim = means.shape
    grad_mean = np.zeros((n_components, dim))
    grad_var = np.zeros((n_components, dim))
    if len(indices) == 0:
        return np.zeros(2 * n_components * dim)
    for index in indices:
        x = encoder.word_features(wv.matrix[index][None, :])[0]
        log_density = np.array(
            [
                np.log(weights[k])
                - 0.5 * np.sum(np.log(2 * np.pi * variances[k]))
                - 0.5 * np.sum((x - means[k]) ** 2 / variances[k])
                for k in range(n_components)
            ]
        )
        posterior = np.exp(log_density - log_density.max())
        posterior /= posterior.sum()
        for k in range(n_components):
            z = (x - means[k]) / np.sqrt(variances[k])
            grad_mean[k] += posterior[k] * z
            grad_var[k] += posterior[k] * (z**2 - 1)
    count = len(indices)
    grad_mean /= count * np.sqrt(weights)[:, None]
    grad_var /= count * np.sqrt(2 * weights)[:, None]
    return np.concatenate([grad_mean.ravel(), grad_var.ravel()])


@pytest.mark.parametrize("pca_words", [None, 2])
def test_fisher_vector_matches_the_literal_formula(pca_words):
    wv = random_vectors(3, seed=1)
    train = [wv.lookup(tokenize(t))[0] for t in random_sentences(60, seed=2)]
    encoder = FisherVectorEncoder(n_components=3, pca_words=pca_words, seed=0).fit(train, wv)
    word_dim = pca_words or 3
    assert encoder.dim == 2 * 3 * word_dim

    queries = [train[0], train[1], np.array([4, 4, 4]), np.array([], dtype=np.int64)]
    raw = encoder.raw_fisher_vectors(queries)
    expected = np.stack([literal_fisher_vector(encoder, wv, q) for q in queries])
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-9)

    normalized = encoder.transform(queries)
    assert normalized.shape == (4, encoder.dim) and normalized.dtype == np.float32
    assert np.isfinite(normalized).all()
    np.testing.assert_allclose(np.linalg.norm(normalized[:3], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(normalized[3], 0.0)
    np.testing.assert_allclose(normalized, power_l2_normalize(expected), rtol=1e-5, atol=1e-7)
    # Tokens and row indices give the same vectors.
    tokens = [[wv.words[i] for i in q] for q in queries]
    np.testing.assert_array_equal(encoder.transform(tokens), normalized)


def test_fisher_transform_in_blocks_gives_the_same_bytes(monkeypatch):
    wv = random_vectors(3, seed=1)
    texts = [wv.lookup(tokenize(t))[0] for t in random_sentences(50, seed=4)]
    texts[7] = np.array([], dtype=np.int64)
    encoder = FisherVectorEncoder(n_components=3, seed=0).fit(texts, wv)
    whole = encoder.transform(texts)
    monkeypatch.setattr(fisher_module, "TRANSFORM_BLOCK_ROWS", 4)
    blocks = encoder.transform(texts)
    assert blocks.tobytes() == whole.tobytes()
    # The signed square root keeps no negative zero (the sign(x) * sqrt(|x|) it replaced).
    assert not np.signbit(blocks[7]).any() and not blocks[7].any()
    raw = encoder.raw_fisher_vectors(texts)
    expected = np.sign(raw) * np.sqrt(np.abs(raw))
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-300)
    np.testing.assert_array_equal(blocks, expected.astype(np.float32))


def test_fisher_with_ica_words_and_variant_names():
    wv = random_vectors(4, seed=5)
    train = random_sentences(80, seed=6)
    encoders = fit_text_encoders(
        train,
        wv,
        TextFeatureSettings(
            method="fisher", fisher_components=2, pca_dim=5, word_dim=3, word_transform="ica"
        ),
    )
    assert encoders.fisher.dim == 2 * 2 * 3
    assert encoders.variant == "fisher2_ica3_pca5_rand4"
    assert encoders.dim == 5
    assert encoders.encode([tokenize(train[0])]).shape == (1, 5)
    assert fit_text_encoders(train, wv, TextFeatureSettings()).variant == "mean_rand4"
    with pytest.raises(ValueError, match="PCA to 50 dims"):
        fit_text_encoders(
            train, wv, TextFeatureSettings(method="fisher", fisher_components=2, pca_dim=50)
        )


def test_fisher_fit_needs_enough_words():
    wv = random_vectors(3)
    with pytest.raises(ValueError, match="at least 5"):
        FisherVectorEncoder(n_components=5).fit([["red", "ball"]], wv)


# --- PCA ----------------------------------------------------------------------------------


def test_pca_in_memory_and_streamed_find_the_same_subspace():
    rng = np.random.default_rng(0)
    scales = np.array([10.0, 5.0, 2.0, 0.1, 0.1, 0.1])
    data = rng.standard_normal((600, 6)) * scales @ np.linalg.qr(rng.standard_normal((6, 6)))[0]
    in_memory = fit_pca(data, 3, seed=0)
    streamed = fit_pca((data[i : i + 70] for i in range(0, 600, 70)), 3, batch_rows=100)
    assert in_memory.transform(data[:5]).shape == (5, 3)
    overlap = np.abs(in_memory.components_ @ streamed.components_.T)
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)
    np.testing.assert_allclose(in_memory.explained_variance_[:2], [100, 25], rtol=0.2)
    with pytest.raises(ValueError, match="cannot"):
        fit_pca(data[:2], 3)
    with pytest.raises(ValueError, match="2 rows"):
        fit_pca(iter([data[:2]]), 3)


def test_streamed_pca_is_the_exact_pca_of_all_rows():
    rng = np.random.default_rng(1)
    scales = np.geomspace(20.0, 0.05, 40)
    rotation = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    # A large offset from zero: the streamed covariance must not cancel it away.
    data = (rng.standard_normal((900, 40)) * scales @ rotation + 50.0).astype(np.float32)
    exact = PCA(12, svd_solver="full").fit(data)
    streamed = fit_pca((data[i : i + 128] for i in range(0, 900, 128)), 12)
    assert isinstance(streamed, PCA)
    np.testing.assert_allclose(streamed.mean_, exact.mean_, rtol=1e-5)
    np.testing.assert_allclose(streamed.explained_variance_, exact.explained_variance_, rtol=1e-3)
    np.testing.assert_allclose(
        np.abs(streamed.components_ @ exact.components_.T), np.eye(12), atol=2e-3
    )
    # The same sign rule as scikit-learn: the same projection, not only the same subspace.
    np.testing.assert_allclose(streamed.transform(data[:50]), exact.transform(data[:50]), atol=2e-2)
    assert streamed.components_.dtype == np.float32
    np.testing.assert_allclose(
        streamed.explained_variance_ratio_.sum(), exact.explained_variance_ratio_.sum(), rtol=1e-4
    )


def test_streamed_pca_wider_than_the_covariance_limit_is_incremental(monkeypatch):
    monkeypatch.setattr(text_pca, "STREAMED_COVARIANCE_MAX_DIM", 30)
    rng = np.random.default_rng(2)
    data = rng.standard_normal((400, 40)) * np.r_[[10.0, 8.0, 6.0, 4.0], np.full(36, 0.1)]
    streamed = fit_pca((data[i : i + 50] for i in range(0, 400, 50)), 4, batch_rows=60)
    assert isinstance(streamed, IncrementalPCA)
    np.testing.assert_allclose(np.abs(np.diag(streamed.components_[:, :4])), 1.0, atol=0.05)
    with pytest.raises(ValueError, match="no rows"):
        fit_pca(iter([]), 3)


# --- no leakage from val/test into anything fitted ------------------------------------------------


def _split_texts(train: list[str], held_out: list[str]) -> pd.DataFrame:
    texts = train + held_out
    return pd.DataFrame(
        {
            "caption_id": [f"c{i}" for i in range(len(texts))],
            "image_id": [f"i{i // 5}" for i in range(len(texts))],
            "text": texts,
            "split": ["train"] * len(train) + ["val", "test"] * (len(held_out) // 2),
        }
    )


def _fit_and_build(texts: pd.DataFrame, source: str, tmp_path, tag: str):
    train_texts = texts.loc[texts["split"] == "train", "text"].tolist()
    if source == "word2vec_train":
        wv = load_word_vectors(
            WordVectorSettings(source=source, word2vec_dim=6, word2vec_min_count=1),
            train_sentences=[tokenize(t) for t in train_texts],
        )
    else:
        # The lookup filter covers every split: restricting pretrained vectors is not fitting.
        wv = load_word_vectors(
            WordVectorSettings(source=source), vocab_filter=dataset_vocabulary(texts["text"])
        )
    encoders = fit_text_encoders(
        train_texts,
        wv,
        TextFeatureSettings(method="fisher", fisher_components=2, pca_dim=4, word_dim=3),
    )
    out = tmp_path / f"{tag}.parquet"
    build_text_features(texts, ["caption_id", "image_id"], out, encoders, chunk_rows=4096)
    ids, matrix = read_features(out)
    return encoders, matrix[(ids["split"] == "train").to_numpy()], matrix


@pytest.mark.parametrize("source", ["word2vec_train", "glove_6b_50d"])
def test_nothing_fitted_depends_on_val_or_test_text(tmp_path, source):
    train = random_sentences(40, seed=10)
    held_out = random_sentences(10, seed=11)
    other_words = "zebra violin desert castle orange piano".split()
    replaced = random_sentences(10, seed=12, words=other_words)

    base, base_train_rows, base_all = _fit_and_build(
        _split_texts(train, held_out), source, tmp_path, "base"
    )
    changed, changed_train_rows, changed_all = _fit_and_build(
        _split_texts(train, replaced), source, tmp_path, "changed"
    )
    assert base.fingerprint() == changed.fingerprint()
    assert base.fisher.fingerprint() == changed.fisher.fingerprint()
    np.testing.assert_array_equal(base.pca.components_, changed.pca.components_)
    np.testing.assert_array_equal(base_train_rows, changed_train_rows)
    assert not np.array_equal(base_all, changed_all)  # the held-out rows did change
    if source == "word2vec_train":
        assert base.wv.fingerprint() == changed.wv.fingerprint()

    edited_train = [*train[:-1], "a red ball on the grass with a small dog"]
    edited, _, _ = _fit_and_build(_split_texts(edited_train, held_out), source, tmp_path, "edit")
    assert edited.fingerprint() != base.fingerprint()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_count_weighted_gmm_equals_sklearn_on_the_expanded_data():
    from sklearn.mixture import GaussianMixture

    from ops.features.text.fisher import fit_diagonal_gmm, log_posteriors

    rng = np.random.default_rng(4)
    points = np.concatenate([rng.normal(-2, 0.5, (15, 2)), rng.normal(2, 1.0, (15, 2))])
    counts = rng.integers(1, 6, len(points)).astype(np.float64)
    init = (np.array([0.5, 0.5]), np.array([[-1.0, 0.0], [1.0, 0.5]]), np.ones((2, 2)))
    ours = fit_diagonal_gmm(points, counts, 2, max_iter=7, tol=0.0, init=init)
    theirs = GaussianMixture(
        2,
        covariance_type="diag",
        max_iter=7,
        tol=0.0,
        weights_init=init[0],
        means_init=init[1],
        precisions_init=1.0 / init[2],
    ).fit(np.repeat(points, counts.astype(int), axis=0))
    assert ours.n_iter == theirs.n_iter_ == 7
    np.testing.assert_allclose(ours.weights, theirs.weights_, rtol=1e-9)
    np.testing.assert_allclose(ours.means, theirs.means_, rtol=1e-9)
    np.testing.assert_allclose(ours.variances, theirs.covariances_, rtol=1e-9)
    np.testing.assert_allclose(
        np.exp(log_posteriors(points, ours.weights, ours.means, ours.variances)),
        theirs.predict_proba(points),
        atol=1e-9,
    )
    # Default init (count-weighted k-means) separates the two clusters.
    fitted = fit_diagonal_gmm(points, counts, 2, seed=0)
    assert fitted.converged
    np.testing.assert_allclose(np.sort(fitted.means[:, 0]), [-2, 2], atol=0.6)


def test_pca_fit_texts_fits_a_seeded_sample_of_the_training_texts():
    wv = random_vectors(4, seed=5)
    train = random_sentences(120, seed=8)
    full = TextFeatureSettings(method="fisher", fisher_components=2, pca_dim=5)
    everything = fit_text_encoders(train, wv, full)
    sampled = fit_text_encoders(train, wv, full.model_copy(update={"pca_fit_texts": 40}))
    assert everything.pca.n_samples_ == 120 and sampled.pca.n_samples_ == 40
    # The same mixture, a PCA of 40 of its Fisher vectors: those the seed picks.
    assert sampled.fisher.fingerprint() == everything.fisher.fingerprint()
    chosen = np.sort(np.random.default_rng(full.seed).choice(120, 40, False))
    vectors = sampled.fisher.transform([tokenize(train[i]) for i in chosen])
    np.testing.assert_allclose(
        np.abs(sampled.pca.components_),
        np.abs(fit_pca(vectors, 5).components_),
        atol=1e-4,
    )
    assert sampled.fingerprint() != everything.fingerprint()
    # A cap at or above the training texts is no cap.
    capped = fit_text_encoders(train, wv, full.model_copy(update={"pca_fit_texts": 120}))
    assert capped.fingerprint() == everything.fingerprint()
