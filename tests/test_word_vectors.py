import gzip
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from ops.data.tables import DatasetFormatError
from ops.data.tokenize import tokenize
from ops.features.text.settings import WordVectorSettings
from ops.features.text.word_vectors import (
    WordVectors,
    detect_vector_format,
    load_word_vectors,
    oov_rate,
)

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "samples"
GLOVE_SAMPLE = SAMPLES / "glove" / "glove.6B.100d.sample.txt.gz"


def _file(path: Path | str) -> WordVectorSettings:
    return WordVectorSettings(source="file", path=str(path))


# --- tokenizer ---------------------------------------------------------------------------


def test_tokenize_english_contractions_numbers_and_punctuation():
    text = "A man's dog doesn't run \u2014 it\u2019s 9:30, 3.5 km! T-shirt, o'clock; dogs' 'toy'"
    assert tokenize(text) == [
        "a", "man", "'s", "dog", "does", "n't", "run", "it", "'s", "9:30", "3.5", "km",
        "t-shirt", "o'clock", "dogs", "toy",
    ]  # fmt: skip


def test_tokenize_normalizes_case_and_compatibility_forms():
    assert tokenize("Stra\u00dfe \uff21\uff22\uff23 \ufb01ne CAF\u00c9") == [
        "strasse",
        "abc",
        "fine",
        "café",
    ]
    assert tokenize("snake_case") == ["snake", "case"]


def test_tokenize_drops_emoji_and_symbols():
    assert tokenize("a \U0001f600 dog \U0001f44d\U0001f3fd!! \u2764\ufe0f # $ %") == ["a", "dog"]
    assert tokenize("\U0001f600\U0001f600") == []


def test_tokenize_cjk_gives_single_characters():
    assert tokenize("我爱北京 東京タワー") == ["我", "爱", "北", "京", "東", "京", "タ", "ワ", "ー"]
    assert tokenize("a猫b") == ["a", "猫", "b"]


def test_tokenize_rtl_words_keep_their_combining_marks():
    arabic = "مَرْحَبًا بالعالم"
    tokens = tokenize(arabic)
    assert tokens == [unicodedata.normalize("NFKC", w) for w in arabic.split()]
    assert tokenize("שָׁלוֹם עולם.") == [unicodedata.normalize("NFKC", "שָׁלוֹם"), "עולם"]
    assert tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


@pytest.mark.parametrize("blank", ["", "   ", "\t\n\r ", "...!?", "\u200b\u00a0"])
def test_tokenize_blank_text_is_empty(blank):
    assert tokenize(blank) == []


def test_tokenize_very_long_text():
    tokens = tokenize("the cat sat. " * 50_000)
    assert len(tokens) == 150_000
    assert tokens[:3] == ["the", "cat", "sat"]
    assert tokenize("x" * 200_000) == ["x" * 200_000]


# --- WordVectors ------------------------------------------------------------------------


def tiny_vectors() -> WordVectors:
    vocab = {"black": 0, "white": 1, "dog": 2}
    matrix = np.array([[1, 0], [0, 1], [2, 2]], dtype=np.float32)
    return WordVectors(vocab, matrix, "tiny")


def test_lookup_counts_oov_and_splits_unknown_hyphenated_compounds():
    wv = tiny_vectors()
    indices, n_oov = wv.lookup(["dog", "cat", "black-and-white", "zz-qq", "black"])
    assert indices.tolist() == [2, 0, 1, 0]
    assert n_oov == 2  # "cat", and "zz-qq" whose parts are both unknown
    assert oov_rate([["dog", "cat"], ["zz"], []], wv) == pytest.approx(2 / 3)
    assert oov_rate([], wv) == 0.0


# --- files --------------------------------------------------------------------------------


def _first_sample_line() -> tuple[str, np.ndarray]:
    with gzip.open(GLOVE_SAMPLE, "rt", encoding="utf-8") as handle:
        parts = handle.readline().rstrip().split(" ")
    return parts[0], np.array(parts[1:], dtype=np.float32)


@pytest.mark.skipif(not GLOVE_SAMPLE.exists(), reason="shared GloVe sample not present")
def test_glove_sample_file_loads_with_values_from_the_file():
    word, expected = _first_sample_line()
    assert detect_vector_format(GLOVE_SAMPLE) == (False, False)
    wv = load_word_vectors(_file(GLOVE_SAMPLE))
    assert wv.dim == 100 == expected.size
    assert len(wv) == 100
    np.testing.assert_array_equal(wv.matrix[wv.vocab[word]], expected)

    filtered = load_word_vectors(_file(GLOVE_SAMPLE), vocab_filter={word, "notaword"})
    assert list(filtered.vocab) == [word]
    np.testing.assert_array_equal(filtered.matrix[0], expected)


def _keyed_vectors() -> KeyedVectors:
    kv = KeyedVectors(4)
    words = ["dog", "Dog", "Paris", "circle", "café"]
    rng = np.random.default_rng(0)
    kv.add_vectors(words, rng.standard_normal((len(words), 4)).astype(np.float32))
    return kv


@pytest.mark.parametrize(
    ("name", "binary"),
    [("vectors.txt", False), ("vectors.bin", True), ("vectors_no_extension", True)],
)
def test_word2vec_formats_round_trip(tmp_path, name, binary):
    kv = _keyed_vectors()
    path = tmp_path / name
    kv.save_word2vec_format(str(path), binary=binary)
    assert detect_vector_format(path) == (binary, True)
    wv = load_word_vectors(_file(path))
    assert wv.dim == 4
    # Keys are case-folded; the lowercase entry wins over "Dog", a cased-only word is kept.
    assert sorted(wv.vocab) == ["café", "circle", "dog", "paris"]
    for word, original in [("dog", "dog"), ("paris", "Paris"), ("café", "café")]:
        np.testing.assert_array_equal(wv.matrix[wv.vocab[word]], kv[original])


def test_gzipped_glove_text_without_header(tmp_path):
    path = tmp_path / "mini.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("the 0.5 -1.0 2.0\nred 1e-3 0 -0.25\n")
    assert detect_vector_format(path) == (False, False)
    wv = load_word_vectors(_file(path))
    np.testing.assert_array_equal(
        wv.matrix[wv.vocab["red"]], np.array([1e-3, 0.0, -0.25], dtype=np.float32)
    )


@pytest.mark.parametrize(
    ("content", "line", "phrase"),
    [
        ("the 0.1 0.2 0.3\ncat 0.1 0.2\ndog 0.1 0.2 0.3\n", 2, "2 values, expected 3"),
        ("2 3\nthe 0.1 0.2 0.3\ncat 0.1 abc 0.3\n", 3, "not a number"),
        ("3 2\nthe 0.1 0.2\ncat 0.1 0.2\n", None, "declares 3 vectors"),
    ],
)
def test_malformed_text_file_error_names_file_and_line(tmp_path, content, line, phrase):
    path = tmp_path / "broken.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetFormatError) as info:
        load_word_vectors(_file(path))
    assert info.value.line == line
    assert "broken.txt" in str(info.value)
    assert phrase in str(info.value)


def test_truncated_binary_file_names_the_file(tmp_path):
    path = tmp_path / "cut.bin"
    _keyed_vectors().save_word2vec_format(str(path), binary=True)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetFormatError, match="cut.bin"):
        load_word_vectors(_file(path))


def test_missing_or_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="not found"):
        load_word_vectors(_file(tmp_path / "absent.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DatasetFormatError, match="empty.txt:1: empty"):
        load_word_vectors(_file(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="fasttext"):
        WordVectorSettings(source="fasttext")


# --- packaged GloVe -------------------------------------------------------------------------


def test_packaged_glove_50d_loads_only_the_requested_words():
    wv = load_word_vectors(WordVectorSettings(), vocab_filter={"the", "circle", "qqqzzzxx"})
    assert wv.dim == 50
    assert sorted(wv.vocab) == ["circle", "the"]
    assert wv.name == "glove50"
    # First values of "the" in the published glove.6B.50d.txt.
    np.testing.assert_allclose(wv.matrix[wv.vocab["the"]][:3], [0.418, 0.24968, -0.41242])
    assert wv.matrix.dtype == np.float32


# --- word2vec trained on the corpus ----------------------------------------------------------


def _corpus(seed: int = 0, n: int = 200) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = "a man woman dog red blue ball runs sits on the grass with".split()
    return [list(rng.choice(words, size=int(rng.integers(3, 9)))) for _ in range(n)]


def test_word2vec_train_is_deterministic_and_seeded():
    corpus = _corpus()
    first = load_word_vectors(
        WordVectorSettings(source="word2vec_train", word2vec_dim=8, seed=1), train_sentences=corpus
    )
    again = load_word_vectors(
        WordVectorSettings(source="word2vec_train", word2vec_dim=8, seed=1), train_sentences=corpus
    )
    other = load_word_vectors(
        WordVectorSettings(source="word2vec_train", word2vec_dim=8, seed=2), train_sentences=corpus
    )
    assert first.dim == 8 and first.name == "w2v8" and first.source == "word2vec_train"
    assert set(first.vocab) == {w for s in corpus for w in s}
    assert first.fingerprint() == again.fingerprint()
    np.testing.assert_array_equal(first.matrix, again.matrix)
    assert first.fingerprint() != other.fingerprint()


def test_word2vec_train_min_count_and_errors():
    corpus = [*_corpus(n=50), ["hapax"]]
    wv = load_word_vectors(
        WordVectorSettings(source="word2vec_train", word2vec_dim=4, word2vec_min_count=2),
        train_sentences=corpus,
    )
    assert "hapax" not in wv
    with pytest.raises(ValueError, match="training"):
        load_word_vectors(WordVectorSettings(source="word2vec_train"))
    with pytest.raises(ValueError, match="no tokens"):
        load_word_vectors(
            WordVectorSettings(source="word2vec_train", word2vec_dim=4), train_sentences=[[], []]
        )


def test_ascii_text_is_split_as_the_full_pattern_splits_it():
    from ops.data.tokenize import _token_pattern

    samples = [
        "A dog's ball, 3.5 m away -- isn't it? well-known_words x86 12:30 don't",
        "".join(chr(code) for code in range(128)),
        "under_score 1,000,000 a-b-c ''quoted'' l'eau",
    ]
    for text in samples:
        full = [m.group(0) for m in _token_pattern(False).finditer(text.casefold())]
        fast = [m.group(0) for m in _token_pattern(True).finditer(text.casefold())]
        assert fast == full and full
