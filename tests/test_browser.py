"""The HTML pages, opened in a real browser: the report and the search galleries load without
console errors and every image on them decodes (headless Chromium; skipped without one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.cli import main
from tests.browser import check_page, find_chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    return path


def test_the_checker_sees_broken_images_and_console_errors(chromium, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><title>broken</title>"
        '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42'
        'mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==">'
        '<img src="data:image/jpeg;base64,bm90IGFuIGltYWdl">'
        "<script>console.error('something failed')</script>"
    )
    checked = check_page(page.as_uri(), chromium)
    assert checked.title == "broken" and len(checked.images) == 2
    assert [image["width"] for image in checked.images] == [1, 0]
    assert len(checked.broken_images) == 1
    assert checked.errors == ["something failed"]


def test_the_report_loads_cleanly_and_every_plot_decodes(synthetic_pipeline, chromium) -> None:
    _, _, outputs, _ = synthetic_pipeline
    report = Path(outputs["report"].path)
    checked = check_page(report.as_uri(), chromium)
    assert checked.title == "twobranch report — synthetic"
    assert checked.errors == []
    assert len(checked.images) >= 5 and checked.broken_images == []
    assert all(image["width"] >= 100 for image in checked.images)


def test_search_galleries_load_cleanly_with_every_thumbnail(
    synthetic_pipeline, chromium, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, _, _, _ = synthetic_pipeline
    queries = tmp_path / "queries.txt"
    queries.write_text("a red circle\na blue square\n", encoding="utf-8")
    query_image = next((root / "raw" / "synthetic" / "images").rglob("*.jpg"))
    pages = {
        "text": ["--queries", str(queries), "--k", "6"],
        "image": ["--image", str(query_image), "--k", "5"],
    }
    expected_images = {"text": 12, "image": 6}  # 2 × 6 hits; the query image and 5 captions'
    for name, args in pages.items():
        page = tmp_path / f"{name}.html"
        search = ["search", *args, "--split", "test", "--format", "html", "--out", str(page)]
        assert main(["--data-root", str(root), *search]) == 0
        capsys.readouterr()
        checked = check_page(page.as_uri(), chromium)
        assert checked.errors == [], name
        assert len(checked.images) == expected_images[name], name
        assert checked.broken_images == [], name
        assert all(0 < image["width"] <= 160 for image in checked.images)
