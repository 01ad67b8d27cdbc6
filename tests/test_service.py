"""``twobranch serve`` on the synthetic run: its answers are the search's, bad input is a 4xx
with a one-line JSON error, a newly published index is picked up without a restart, and its
page works in a real browser (type a query, see thumbnails)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ops.cli import build_parser
from ops.search.engine import open_index, search_image, search_text
from ops.search.manifest import MANIFEST
from ops.search.service import (
    MAX_QUERY_CHARS,
    MAX_UPLOAD_BYTES,
    PublishedIndexes,
    background_server,
    create_app,
)
from ops.storage.atomic import replace_directory, write_text_atomic
from tests.browser import Typing, check_page, find_chromium


@pytest.fixture(scope="module")
def served(synthetic_pipeline):
    root, _, _, _ = synthetic_pipeline
    indexes = PublishedIndexes(root, "synthetic", "cpu")
    return root, TestClient(create_app(indexes), raise_server_exceptions=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _image_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def test_text_search_answers_as_the_search_does(served) -> None:
    root, client = served
    response = client.get("/search", params={"q": "a red circle", "k": 6, "split": "test"})
    assert response.status_code == 200
    answer = response.json()
    index = open_index(root, "synthetic", "cpu")
    [expected] = search_text(index, ["a red circle"], k=6, split="test")
    assert answer["run_id"] == index.manifest["run_id"] and answer["dataset"] == "synthetic"
    assert [h["image_id"] for h in answer["hits"]] == [h.image_id for h in expected.hits]
    assert [h["score"] for h in answer["hits"]] == pytest.approx([h.score for h in expected.hits])
    for hit, want in zip(answer["hits"], expected.hits, strict=True):
        assert hit["split"] == "test" and hit["path"] == want.path
        assert hit["captions"] == want.captions and len(hit["captions"]) == 5
    thumbnail = client.get(answer["hits"][0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as picture:
        assert 0 < max(picture.size) <= 160
    assert client.get("/healthz").json() == {
        "status": "ok",
        "indexes": {"synthetic": index.manifest["run_id"]},
    }
    page = client.get("/")
    assert page.status_code == 200 and 'id="text-form"' in page.text


def test_image_upload_answers_with_captions(served) -> None:
    root, client = served
    index = open_index(root, "synthetic", "cpu")
    path = index.images[index.images["split"] == "test"].iloc[0]["path"]
    response = client.post(
        "/search/image",
        params={"k": 5, "split": "test"},
        files={"image": ("query.jpg", _image_bytes(path), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = search_image(index, path, k=5, split="test")
    assert answer["image"] == "query.jpg"
    assert [h["caption_id"] for h in answer["hits"]] == [h.caption_id for h in expected.hits]
    assert [h["text"] for h in answer["hits"]] == [h.text for h in expected.hits]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": ""}, 422, "q: String should have at least 1 character"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, 422, "q: String should have at most 500"),
        ({}, 422, "q: Field required"),
        ({"q": "a dog", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "a dog", "k": 101}, 422, "k: Input should be less than or equal to 100"),
        ({"q": "a dog", "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"q": "a dog", "dataset": "nope"}, 404, "unknown dataset 'nope'"),
        ({"q": "a dog", "dataset": "../../etc"}, 404, "unknown dataset '../../etc'"),
        ({"q": "a dog", "split": "holdout"}, 400, "split 'holdout' is not in the index"),
        ({"q": "   "}, 400, "empty query"),
        ({"q": "zzqx blorft"}, 400, "is in the model's vocabulary"),
    ],
)
def test_bad_text_queries_are_4xx_with_a_json_error(served, params, status, message) -> None:
    _, client = served
    response = client.get("/search", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in response.text


def test_bad_uploads_are_4xx_with_a_json_error(served) -> None:
    _, client = served
    cases = [
        ({"image": ("notes.txt", b"just some text", "text/plain")}, 400, "cannot read the image"),
        ({"image": ("empty.jpg", b"", "image/jpeg")}, 400, "the upload is empty"),
        (
            {"image": ("big.jpg", b"\xff" * (MAX_UPLOAD_BYTES + 1), "image/jpeg")},
            413,
            "the upload is over 10 MiB",
        ),
        ({"other": ("x.jpg", b"x", "image/jpeg")}, 422, "image: Field required"),
    ]
    for files, status, message in cases:
        response = client.post("/search/image", files=files)
        assert response.status_code == status, (files.keys(), response.text)
        error = response.json()["error"]
        assert message in error and "\n" not in error
        assert "twobranch-upload" not in error  # the temporary file's name stays inside
    missing = client.get("/thumbnail", params={"image_id": "no-such-image"})
    assert missing.status_code == 404 and "no image 'no-such-image'" in missing.json()["error"]


def test_an_unexpected_failure_is_a_500_json_error_without_a_traceback() -> None:
    class Broken:
        default_dataset = "synthetic"

        def get(self, dataset: str):
            raise RuntimeError("disk on fire\nat line 3")

        def loaded(self) -> dict[str, str]:
            return {}

    client = TestClient(create_app(Broken()), raise_server_exceptions=False)
    response = client.get("/search", params={"q": "a dog"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError)"}


def test_a_newly_published_index_is_served_without_a_restart(served, tmp_path: Path) -> None:
    root, _ = served
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("raw", "proposals", "features"))
    client = TestClient(create_app(PublishedIndexes(copy, "synthetic", "cpu")))
    first = client.get("/search", params={"q": "a red circle", "k": 3}).json()
    folder = copy / "index" / "synthetic"
    # A new champion's index is written aside and swapped in whole, as the pipeline does.
    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh)
    manifest = json.loads((fresh / MANIFEST).read_text())
    manifest["run_id"] = "a-newer-champion"
    write_text_atomic(fresh / MANIFEST, json.dumps(manifest))
    replace_directory(fresh, folder, tmp_path / "previous")
    second = client.get("/search", params={"q": "a red circle", "k": 3}).json()
    assert first["run_id"] != "a-newer-champion" and second["run_id"] == "a-newer-champion"
    assert client.get("/healthz").json()["indexes"] == {"synthetic": "a-newer-champion"}
    shutil.rmtree(folder)
    gone = client.get("/search", params={"q": "a red circle"})
    assert gone.status_code == 404 and "retrieval_index" in gone.json()["error"]


def test_serve_binds_to_localhost_by_default() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.dataset) == ("127.0.0.1", 8080, "synthetic")


def test_the_serve_command_answers_over_http(served, tmp_path: Path) -> None:
    root, _ = served
    port = _free_port()
    command = [sys.executable, "-m", "assets.cli", "--data-root", str(root), "serve"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "w"),
    )
    try:
        url = f"http://127.0.0.1:{port}/search?q=a+blue+square&k=2"
        answer = None
        for _ in range(600):
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    answer = json.loads(response.read())
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert answer is not None and len(answer["hits"]) == 2
    finally:
        process.terminate()
        process.wait(timeout=30)
    refused = subprocess.run(
        [*command, "--dataset", "nope"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("twobranch serve: unknown dataset 'nope'")
    assert refused.stderr.count("\n") == 1


def test_the_page_shows_thumbnails_for_a_typed_query(served) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    root, _ = served
    app = create_app(PublishedIndexes(root, "synthetic", "cpu"))
    with background_server(app) as url:
        typing = Typing("#q", "a red circle", "document.querySelectorAll('#results img').length")
        checked = check_page(url + "/", chromium, typing=typing)
    assert checked.title == "twobranch search" and checked.errors == []
    assert len(checked.images) == 10 and checked.broken_images == []
    assert all(0 < image["width"] <= 160 for image in checked.images)
