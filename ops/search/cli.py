"""``twobranch search``: a thin shell over :mod:`ops.search.engine` (one-line errors, exit 2)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ops.storage.paths import data_root

DESCRIPTION = """\
Ask the dataset's champion embedding network. A text query returns the best-matching images
(id, path, score, split and their captions); --image PATH returns the best-matching captions;
--queries FILE answers one text query per line, as JSON lines. Queries are encoded exactly as
the training captions and images were. Needs the dataset's retrieval_index asset.
"""


def add_search_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="text → images or image → captions with the champion model",
        description=DESCRIPTION,
    )
    parser.add_argument("query", nargs="?", help='a text query, e.g. "a dog on a beach"')
    parser.add_argument("--image", type=Path, help="an image file: find captions for it")
    parser.add_argument("--queries", type=Path, help="a text file, one query per line")
    parser.add_argument("--dataset", default="synthetic", help="registered dataset name")
    parser.add_argument("--split", help="search only this split (e.g. test); default: all")
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument(
        "--format",
        choices=("table", "json", "html"),
        help="table (default; JSON lines with --queries), json, or html (a gallery; needs --out)",
    )
    parser.add_argument("--out", type=Path, help="write the results to this file")
    _add_device(parser, "auto (CUDA when present), cpu, cuda")
    parser.set_defaults(handler=run_search)


def _add_device(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--device", default=os.environ.get("TWOBRANCH_DEVICE", "auto"), help=help)


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="the search as an HTTP service: GET /search?q=…, POST /search/image, a page at /",
        description="Serve text → images and image → captions over HTTP with the champion "
        "embedding network, loaded once and reloaded when a new index is published. Binds to "
        "127.0.0.1 unless told otherwise; it has no login of its own.",
    )
    parser.add_argument("--dataset", default="synthetic", help="default dataset of a request")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    _add_device(parser, "for image queries: auto (CUDA when present), cpu, cuda")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ops.search.service import ServiceError, serve

    try:
        serve(data_root(args.data_root), args.dataset, args.host, args.port, args.device)
    except ServiceError as error:
        print(f"twobranch serve: {error}", file=sys.stderr)
        return 2
    return 0


def _fail(message: str) -> int:
    print(f"twobranch search: {message}", file=sys.stderr)
    return 2


def _read_queries(path: Path) -> list[str]:
    from ops.search.errors import SearchError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SearchError(f"{path}: cannot read the queries ({error})") from None
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise SearchError(f"{path}: no queries (one per line)")
    return queries


def _unwritable(out: Path) -> str | None:
    """Why ``out`` cannot take the results, checked before any work; None when it can."""
    if out.is_dir():
        return f"--out {out} is a folder; give a file name"
    folder = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if folder is not None and not folder.is_dir():
        return f"--out {out}: {folder} is not a folder"
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out}: {folder} is not writable"
    return None


def _write(text: str, out: Path | None) -> str | None:
    """Write the results; why not, in one line, when the file cannot be written."""
    if out is None:
        sys.stdout.write(text)
        return None
    from ops.storage.atomic import write_text_atomic

    try:
        write_text_atomic(out, text)
    except OSError as error:
        return f"cannot write --out {out}: {error.strerror or error}"
    print(f"wrote {out}", file=sys.stderr)
    return None


def _k_note(index: object, args: argparse.Namespace) -> str | None:
    side = "captions" if args.image is not None else "images"
    available = index.candidates(side, args.split)  # type: ignore[attr-defined]
    if args.k <= available:
        return None
    where = f"split {args.split!r}" if args.split else "the index"
    return (
        f"note: --k {args.k} is more than the {available} {side} in {where}; "
        f"showing at most {available}"
    )


def run_search(args: argparse.Namespace) -> int:
    given = [name for name in ("query", "image", "queries") if getattr(args, name) is not None]
    if len(given) != 1:
        return _fail("give exactly one of: a text query, --image PATH, --queries FILE")
    output_format = args.format or ("json" if args.queries else "table")
    if output_format == "html" and args.out is None:
        return _fail("--format html writes a gallery page: give --out FILE")
    if args.out is not None and (problem := _unwritable(args.out)):
        return _fail(problem)
    from ops.search import render
    from ops.search.engine import open_index, search_image, search_text
    from ops.search.errors import SearchError

    try:
        queries = _read_queries(args.queries) if args.queries else None
        if args.image is not None:
            from ops.search.encoding import check_image

            check_image(args.image)  # before loading anything
        index = open_index(data_root(args.data_root), args.dataset, args.device)
        if index.stale:
            print(f"twobranch search: warning: {index.stale}", file=sys.stderr)
        if note := _k_note(index, args):
            print(f"twobranch search: {note}", file=sys.stderr)
        if args.image is not None:
            results = [search_image(index, args.image, args.k, args.split)]
        else:
            results = search_text(index, queries or [args.query], args.k, args.split)
            if queries is None and results[0].error:
                raise SearchError(results[0].error)
    except SearchError as error:
        return _fail(str(error))
    if output_format == "html":
        text = render.to_html(results, f"twobranch search — {args.dataset}")
    elif output_format == "json":
        text = render.to_json(results, lines=queries is not None)
    else:
        text = render.to_table(results)
    if problem := _write(text, args.out):
        return _fail(problem)
    unanswered = sum(1 for r in results if getattr(r, "error", None))
    if unanswered:
        note = f'{unanswered} of {len(results)} queries unanswered (see their "error")'
        print(f"twobranch search: {note}", file=sys.stderr)
    return 0
