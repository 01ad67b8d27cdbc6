"""`twobranch search` at its edges: an --out it cannot write is one line before any work, and
--k is capped at the number of indexed items, which the output says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.cli import main
from ops.search.engine import open_index, search_image, search_text

QUERY = "a red circle"


@pytest.fixture(scope="module")
def indexed(synthetic_pipeline):
    root = synthetic_pipeline[0]
    return root, open_index(root, "synthetic", "cpu")


def _cli(capsys: pytest.CaptureFixture, root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-root", str(root), "search", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_failure(code: int, out: str, err: str) -> str:
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("twobranch search: ") and "Traceback" not in err
    return err


def test_out_onto_a_folder_is_one_line(indexed, capsys, tmp_path: Path) -> None:
    root, _ = indexed
    folder = tmp_path / "results"
    (folder / "kept").mkdir(parents=True)
    err = _one_line_failure(*_cli(capsys, root, QUERY, "--format", "json", "--out", str(folder)))
    assert f"--out {folder} is a folder" in err
    assert [p.name for p in folder.iterdir()] == ["kept"]


def test_out_under_a_file_is_one_line(indexed, capsys, tmp_path: Path) -> None:
    root, _ = indexed
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    out = plain / "gallery.html"
    err = _one_line_failure(*_cli(capsys, root, QUERY, "--format", "html", "--out", str(out)))
    assert f"{plain} is not a folder" in err and plain.read_text() == "mine"


def test_out_where_nothing_can_be_written_is_one_line(indexed, capsys) -> None:
    """/proc takes no new files, not even from root: the write itself fails."""
    root, _ = indexed
    out = Path("/proc/twobranch-results.json")
    err = _one_line_failure(*_cli(capsys, root, QUERY, "--format", "json", "--out", str(out)))
    assert f"--out {out}" in err
    assert not out.exists()


def test_k_is_capped_at_the_indexed_images_and_the_output_says_so(indexed, capsys) -> None:
    root, index = indexed
    images = index.candidates("images", None)
    test_images = index.candidates("images", "test")
    assert images == len(index.images) and 0 < test_images < images
    [result] = search_text(index, [QUERY], k=1_000_000_000)
    assert len(result.hits) == images
    assert [hit.rank for hit in result.hits] == list(range(1, images + 1))
    code, out, err = _cli(
        capsys, root, QUERY, "--split", "test", "--k", "100000000", "--format", "json"
    )
    assert code == 0
    answer = json.loads(out)
    assert len(answer["hits"]) == test_images and {h["split"] for h in answer["hits"]} == {"test"}
    assert (
        f"note: --k 100000000 is more than the {test_images} images in split 'test'; "
        f"showing at most {test_images}"
    ) in err


def test_k_within_the_index_is_unchanged_and_says_nothing(indexed, capsys) -> None:
    root, _ = indexed
    code, out, err = _cli(capsys, root, QUERY, "--k", "3", "--format", "json")
    assert code == 0 and len(json.loads(out)["hits"]) == 3 and "note" not in err


def test_k_of_an_image_query_is_capped_at_the_captions(indexed) -> None:
    root, index = indexed
    image = str(index.images["path"].iloc[0])
    result = search_image(index, image, k=10**9, split="val")
    assert len(result.hits) == index.candidates("captions", "val") > 0
    assert {hit.split for hit in result.hits} == {"val"}
