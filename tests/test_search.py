"""``twobranch search`` on the synthetic run: it reproduces the evaluator's recalls, answers
image queries, renders its formats, and refuses bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops.cli import main
from ops.search.engine import open_index, search_image, search_text
from ops.storage.sql import run_query


def _stored_recalls(root: Path, run_id: str) -> dict[str, dict[str, float]]:
    frame = run_query(
        root,
        "SELECT direction, r1, r5, r10 FROM retrieval_metrics WHERE run_id = "
        f"'{run_id}' AND method = 'single_stage' AND protocol = 'all'",
    )
    return {row.pop("direction"): row for row in frame.to_dict("records")}


@pytest.fixture(scope="module")
def indexed(synthetic_pipeline):
    root, _, outputs, _ = synthetic_pipeline
    run_id = outputs["image_sentence_embedding_net"].run_id
    assert outputs["retrieval_index"].run_id == run_id  # the champion was indexed
    return root, run_id, open_index(root, "synthetic", "cpu")


def _cli(capsys: pytest.CaptureFixture, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-root", str(root), "search", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_queries_reproduce_the_stored_text_to_image_recalls(
    indexed, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    root, run_id, index = indexed
    test = index.captions[index.captions["split"] == "test"]
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(test["text"]) + "\n", encoding="utf-8")
    code, out, _ = _cli(capsys, root, "--queries", str(queries), "--split", "test", "--k", "10")
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["query"] for a in answers] == test["text"].tolist()
    ranks = []
    for answer, own_image in zip(answers, test["image_id"], strict=True):
        assert len(answer["hits"]) == 10 and answer["error"] is None
        assert {hit["split"] for hit in answer["hits"]} == {"test"}
        found = [hit["image_id"] for hit in answer["hits"]]
        ranks.append(found.index(own_image) + 1 if own_image in found else 11)
    stored = _stored_recalls(root, run_id)["t2i"]
    for k in (1, 5, 10):
        assert 100 * np.mean(np.array(ranks) <= k) == pytest.approx(stored[f"r{k}"], abs=0.01)


def test_image_queries_find_their_captions_at_the_stored_image_to_text_recall(indexed) -> None:
    root, run_id, index = indexed
    test_images = index.images[index.images["split"] == "test"]
    hits = []
    for image in test_images.itertuples():
        result = search_image(index, image.path, k=10, split="test")
        assert len(result.hits) == 10 and {h.split for h in result.hits} == {"test"}
        hits.append(any(hit.image_id == image.image_id for hit in result.hits))
    stored = _stored_recalls(root, run_id)["i2t"]
    assert 100 * np.mean(hits) == pytest.approx(stored["r10"], abs=0.01)


def test_a_text_query_lists_images_with_their_captions_best_first(indexed) -> None:
    _, _, index = indexed
    [result] = search_text(index, ["a red circle on a gray background"], k=5)
    assert result.error is None and [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    captions = index.captions.groupby("image_id")["text"].agg(list)
    for hit in result.hits:
        assert Path(hit.path).is_file() and hit.captions == captions[hit.image_id]
    # Every split is searched unless one is named; the best image overall is first.
    assert {h.split for h in search_text(index, ["a shape"], k=84)[0].hits} == {
        "train",
        "val",
        "test",
    }


def test_table_json_and_html_outputs(indexed, capsys: pytest.CaptureFixture, tmp_path) -> None:
    root, _, index = indexed
    code, out, _ = _cli(capsys, root, "a blue square", "--k", "3")
    assert code == 0 and out.startswith("query: a blue square") and out.count("\n   ") >= 3
    code, out, _ = _cli(capsys, root, "a blue square", "--k", "3", "--format", "json")
    document = json.loads(out)
    assert document["query"] == "a blue square" and len(document["hits"]) == 3
    image = index.images.iloc[0]["path"]
    page = tmp_path / "gallery.html"
    code, _, err = _cli(capsys, root, "--image", image, "--format", "html", "--out", str(page))
    assert code == 0 and str(page) in err
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 11  # the query and its ten captions' images
    assert "<script" not in html and 'src="http' not in html


def test_a_query_is_encoded_as_its_training_caption_was(indexed) -> None:
    from ops.search.encoding import encode_texts
    from ops.storage.parquet_io import read_features

    root, _, index = indexed
    ids, stored = read_features(root / index.manifest["text_features"])
    text = index.captions.set_index("caption_id")["text"]
    encoded, problems = encode_texts(index.encoders, text.loc[ids["caption_id"]].tolist())
    assert problems == [None] * len(ids)
    np.testing.assert_array_equal(encoded, stored)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a dog", "--dataset", "nope"], "unknown dataset 'nope' (registered: synthetic)"),
        ([""], "empty query"),
        (["   "], "empty query"),
        (["zzqx blorft"], "no word of the query 'zzqx blorft' is in the model's vocabulary"),
        (["!!! ???"], "has no words"),
        (["a dog", "--split", "holdout"], "split 'holdout' is not in the index"),
        (["a dog", "--format", "html"], "give --out FILE"),
        (["a dog", "--image", "x.jpg"], "give exactly one of"),
        (["--image", "missing.jpg"], "missing.jpg: no such image file"),
        (["a dog", "--k", "0"], "k must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    indexed, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    root, _, _ = indexed
    code, out, err = _cli(capsys, root, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("twobranch search: ") and message in err


def test_an_unreadable_image_is_one_line(indexed, capsys, tmp_path: Path) -> None:
    root, _, _ = indexed
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = _cli(capsys, root, "--image", str(fake))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"twobranch search: {fake}: cannot read the image")


def test_no_trained_model_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, out, err = _cli(capsys, tmp_path, "a dog on a beach")
    assert code == 2 and out == ""
    assert err == (
        "twobranch search: no trained image–sentence embedding model for dataset 'synthetic': "
        "run the full_pipeline (or retrain) job for it first\n"
    )


def test_many_queries_with_some_unanswerable(indexed, capsys, tmp_path: Path) -> None:
    root, _, _ = indexed
    queries = tmp_path / "queries.txt"
    queries.write_text("a green triangle\n\nqqqq zzzz\na small circle\n", encoding="utf-8")
    code, out, err = _cli(capsys, root, "--queries", str(queries), "--k", "2")
    answers = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [a["query"] for a in answers] == [
        "a green triangle",
        "qqqq zzzz",
        "a small circle",
    ]
    assert [len(a["hits"]) for a in answers] == [2, 0, 2]
    assert "vocabulary" in answers[1]["error"] and "1 of 3 queries unanswered" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, _, err = _cli(capsys, root, "--queries", str(empty))
    assert code == 2 and "no queries" in err


def test_index_rows_are_the_dataset_in_split_order(indexed) -> None:
    root, _, index = indexed
    images = pd.read_parquet(root / "tables" / "synthetic" / "images.parquet")
    assert sorted(index.images["image_id"]) == sorted(images["image_id"])
    assert index.images["split"].tolist() == sorted(
        index.images["split"], key=["train", "val", "test"].index
    )
    for side, frame in (("images", index.images), ("captions", index.captions)):
        for split, (start, stop) in index.manifest[side]["splits"].items():
            assert set(frame["split"].iloc[start:stop]) == {split}
    assert index.image_index.ntotal == len(index.images) == 84
    assert index.caption_index.ntotal == len(index.captions) == 5 * 84


def test_a_damaged_index_is_one_line(indexed, capsys, tmp_path: Path) -> None:
    import shutil

    root, _, _ = indexed
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("raw", "proposals"))
    (copy / "index" / "synthetic" / "images.faiss").write_bytes(b"not an index")
    code, out, err = _cli(capsys, copy, "a red circle")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "cannot be read" in err and "re-materialize retrieval_index" in err
    code, _, err = _cli(capsys, copy, "a red circle", "--device", "cuda:7")
    assert code == 2 and err.count("\n") == 1 and "cuda:7" in err


def test_text_queries_run_the_exported_text_branch_without_torch(indexed, tmp_path) -> None:
    import os

    import torch

    from tests.test_light_cli import run_probed

    root, _, _ = indexed
    index = open_index(root, "synthetic", "cpu")
    features = np.random.default_rng(0).standard_normal((8, index.text_branch.in_dim))
    [result] = search_text(index, ["a red circle"], k=3)
    assert index._model is None  # a text query did not load the network
    with torch.no_grad():
        rows = torch.from_numpy(features.astype(np.float32))
        expected = index.model.network.embed_text(rows).numpy()
    np.testing.assert_allclose(index.embed_texts(features), expected, atol=1e-5, rtol=0)
    probe, out = run_probed(
        ["--data-root", str(root), "search", "a red circle", "--k", "3", "--format", "json"],
        tmp_path,
        dict(os.environ),
    )
    assert probe == {"code": 0, "heavy": []}
    assert [h["image_id"] for h in json.loads(out)["hits"]] == [h.image_id for h in result.hits]


def test_an_index_without_the_exported_branch_answers_through_the_network(
    indexed, tmp_path: Path
) -> None:
    import shutil

    root, _, index = indexed
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("raw", "proposals", "features"))
    (copy / "index" / "synthetic" / "text_branch.npz").unlink()  # as an older index was built
    older = open_index(copy, "synthetic", "cpu")
    assert older.text_branch is None
    [answer] = search_text(older, ["a red circle"], k=5)
    [expected] = search_text(index, ["a red circle"], k=5)
    assert [h.image_id for h in answer.hits] == [h.image_id for h in expected.hits]
    scores = [h.score for h in expected.hits]
    assert [h.score for h in answer.hits] == pytest.approx(scores, abs=1e-5)
