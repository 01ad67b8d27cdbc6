"""The ``twobranch`` command's plain tools: read-only SQL over results, the evaluators and
search."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ops.search.cli import add_search_command, add_serve_command
from ops.storage.paths import data_root, reports_dir, results_db
from ops.storage.sql import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_SECONDS,
    QueryRefused,
    QueryStopped,
    format_frame,
    run_query,
)

EXAMPLE_QUERIES = (
    "SELECT split, count(*) AS captions FROM captions GROUP BY split ORDER BY split",
    "SELECT run_id, task, network, best_val_score, champion FROM training_runs "
    "ORDER BY started_at DESC",
    "SELECT protocol, direction, r1, r5, r10, rsum FROM retrieval_metrics "
    "WHERE method = 'single_stage' ORDER BY run_id, direction",
)


def _add_sql(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sql",
        help="run one read-only SQL query over results.duckdb",
        description="Run a read-only query (SELECT) over the project's tables and views. "
        "Writes, DDL, ATTACH, COPY and access to files outside the data root are refused.",
    )
    parser.add_argument("query", help='e.g. "SELECT split, count(*) FROM captions GROUP BY 1"')
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--max-rows", type=int, default=200, help="rows shown in table format")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="stop the query after this many seconds (default: %(default)g)",
    )
    parser.add_argument(
        "--memory-limit",
        default=DEFAULT_MEMORY_LIMIT,
        metavar="SIZE",
        help="most memory the query may use, e.g. 512MB, 8GB (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_sql)


def _run_sql(args: argparse.Namespace) -> int:
    try:
        frame = run_query(data_root(args.data_root), args.query, args.timeout, args.memory_limit)
    except (QueryRefused, QueryStopped) as refused:
        print(f"twobranch sql: {refused}", file=sys.stderr)
        return 2
    except Exception as error:  # a query error is the user's to read, not a traceback
        print(f"twobranch sql: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(format_frame(frame, args.format, args.max_rows))
    return 0


def print_where_results_are(root: Path) -> None:
    """The data root, the results database, the latest report and example queries."""
    from ops.storage.results_store import ensure_catalogue

    ensure_catalogue(root)
    print(f"Data root:        {root}")
    print(f"Results database: {results_db(root)}")
    reports = sorted(reports_dir(root).glob("*/report.html"), key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"Latest report:    {reports[-1]}")
    print("\nTry:")
    for query in EXAMPLE_QUERIES:
        print(f'  twobranch sql "{query}"')


def _add_evaluators(subparsers: argparse._SubParsersAction) -> None:
    from ops.metrics import eval_cli

    retrieval = subparsers.add_parser(
        "eval-retrieval", help="Recall@K, median/mean rank from a score matrix (.npy)"
    )
    eval_cli.add_eval_retrieval_arguments(retrieval)
    retrieval.set_defaults(handler=eval_cli.run_eval_retrieval)
    grounding = subparsers.add_parser(
        "eval-grounding", help="phrase localization accuracy from predicted boxes (.json)"
    )
    eval_cli.add_eval_grounding_arguments(grounding)
    grounding.set_defaults(handler=eval_cli.run_eval_grounding)


CommandAdder = Callable[[argparse._SubParsersAction], None]


def build_parser(extra_commands: Sequence[CommandAdder] = ()) -> argparse.ArgumentParser:
    """The ``twobranch`` parser; ``extra_commands`` add subcommands that live in other layers
    (the Dagster-aware ``dataset`` commands)."""
    parser = argparse.ArgumentParser(
        prog="twobranch", description="Two-branch image-text matching networks: tools."
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data root (default: $TWOBRANCH_DATA or ./data)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_sql(subparsers)
    _add_evaluators(subparsers)
    add_search_command(subparsers)
    add_serve_command(subparsers)
    for add in extra_commands:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, extra_commands: Sequence[CommandAdder] = ()) -> int:
    args = build_parser(extra_commands).parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
