"""The ``twobranch`` command: the plain tools of ``ops.cli`` plus the ``dataset`` commands,
which keep the registry (in the data root) and the Dagster instance's dataset partitions in
step.

Dagster loads only inside the commands that talk to the instance, and none of them loads the
asset definitions (or torch), so that ``twobranch --help``, ``sql`` and ``dataset list`` start
at once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ops import cli as plain_cli
from ops.data.purge import remove_dataset
from ops.data.registry import (
    SOURCES,
    DatasetRegistryError,
    add_dataset,
    load_registry,
)
from ops.storage.paths import data_root

if TYPE_CHECKING:
    import dagster as dg

# The project's own instance folder, when DAGSTER_HOME is not set (an editable install).
PROJECT_DAGSTER_HOME = Path(__file__).resolve().parents[1] / "dagster_home"


def dagster_instance() -> dg.DagsterInstance:
    """The instance at ``$DAGSTER_HOME``, else the project's ``dagster_home/``."""
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME") and PROJECT_DAGSTER_HOME.is_dir():
        os.environ["DAGSTER_HOME"] = str(PROJECT_DAGSTER_HOME)
    return dg.DagsterInstance.get()


def _sync(root: Path) -> str:
    from assets.partitions import sync_dataset_partitions

    with dagster_instance() as instance:
        added = sync_dataset_partitions(instance, load_registry(root))
    return f" (Dagster partitions added: {', '.join(added)})" if added else ""


def _run_add(args: argparse.Namespace) -> int:
    root = data_root(args.data_root)
    checksums = {}
    for item in args.split_sha256 or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise DatasetRegistryError(f"--split-sha256 {item!r}: expected FILE=HEX")
        checksums[name] = value
    entry = add_dataset(
        root,
        args.name,
        args.source,
        args.path,
        args.karpathy_split,
        split=args.split,
        split_lists=args.split_lists,
        split_lists_sha256=checksums or None,
    )
    print(f"registered {entry.name} ({entry.source}{', ' + entry.path if entry.path else ''})")
    print(_sync(root).strip() or "Dagster partitions up to date")
    print(
        "run it with: dagster job execute -m assets.definitions -j full_pipeline "
        f'--tags \'{{"dagster/partition": "{entry.name}"}}\''
    )
    return 0


def _run_list(args: argparse.Namespace) -> int:
    for entry in load_registry(data_root(args.data_root)).values():
        extra = f"  karpathy_split={entry.karpathy_split}" if entry.karpathy_split else ""
        extra += f"  split=paper ({entry.split_lists})" if entry.split == "paper" else ""
        print(f"{entry.name:24} {entry.source:20} {entry.path or '-'}{extra}")
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    root = data_root(args.data_root)
    running: list[str] = []
    if args.purge:
        from assets.partitions import runs_in_progress

        with dagster_instance() as instance:
            running = runs_in_progress(instance, args.name)
    removed = remove_dataset(root, args.name, purge=args.purge, runs_in_progress=running)
    _sync(root)
    print(f"removed {args.name} from the registry and the Dagster partitions")
    for folder in removed:
        print(f"deleted {folder}")
    return 0


def _run_sync(args: argparse.Namespace) -> int:
    root = data_root(args.data_root)
    print(_sync(root).strip() or "Dagster partitions up to date")
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    from assets.run_summary import print_run_summaries

    root = data_root(args.data_root)
    plain_cli.print_where_results_are(root)
    with dagster_instance() as instance:
        shown = print_run_summaries(instance, root, args.dataset or None)
    if not shown:
        print(
            "\nNo full_pipeline run yet"
            + (f" for {', '.join(args.dataset)}" if args.dataset else "")
        )
    return 0


def add_summary_command(subparsers: argparse._SubParsersAction) -> None:
    summary = subparsers.add_parser(
        "summary",
        help="where the results are; per dataset, the latest run's seconds per asset and "
        "its headline results",
    )
    summary.add_argument(
        "--dataset", action="append", default=[], help="only this dataset (repeatable)"
    )
    summary.set_defaults(handler=_run_summary)


def _run_profile(args: argparse.Namespace) -> int:
    # Dagster's own merge, so the printed config is what ``dagster job execute -c A -c B`` runs.
    import yaml
    from dagster_shared.yaml_utils import load_yaml_from_glob_list

    missing = [path for path in args.files if not Path(path).is_file()]
    if missing:
        print(f"twobranch profile: no such file {', '.join(missing)}", file=sys.stderr)
        return 2
    merged = load_yaml_from_glob_list([str(path) for path in args.files])
    sys.stdout.write(yaml.safe_dump(merged, sort_keys=False))
    return 0


def add_profile_command(subparsers: argparse._SubParsersAction) -> None:
    profile = subparsers.add_parser(
        "profile",
        help="print run configurations merged as `dagster job execute -c A -c B` merges them "
        "(the first file wins), e.g. to paste an overlay and its base into the launchpad",
    )
    profile.add_argument("files", nargs="+", help="run configuration files, overlay first")
    profile.set_defaults(handler=_run_profile)


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except DatasetRegistryError as error:
            print(f"twobranch dataset: {error}", file=sys.stderr)
            return 2

    return run


def add_dataset_commands(subparsers: argparse._SubParsersAction) -> None:
    dataset = subparsers.add_parser(
        "dataset", help="register, list and remove datasets (each a Dagster partition)"
    )
    commands = dataset.add_subparsers(dest="dataset_command", required=True)
    add = commands.add_parser("add", help="register a dataset under a name")
    add.add_argument("name", help="letters, digits, '_', '-', '.'; becomes the partition key")
    add.add_argument("--source", required=True, choices=SOURCES)
    add.add_argument(
        "--path",
        help="the dataset's folder (custom: Karpathy JSON + images; coco_official: caption "
        "JSONs + image folders; flickr30k/flickr30k_entities: the images you downloaded)",
    )
    add.add_argument(
        "--karpathy-split", help="coco_official: a Karpathy dataset_coco.json for the splits"
    )
    add.add_argument(
        "--split",
        choices=("karpathy", "paper"),
        default="karpathy",
        help="coco: Karpathy's split (default) or the authors' (paper: 113,287 / 9,000 / 1,000)",
    )
    add.add_argument(
        "--split-lists",
        help="--split paper: a folder with the authors' train.txt, val.txt and test.txt, or "
        "their base URL",
    )
    add.add_argument(
        "--split-sha256",
        action="append",
        metavar="FILE=HEX",
        help="--split-lists URL: the SHA-256 of each list, e.g. test.txt=<64 hex digits>",
    )
    add.set_defaults(handler=_guarded(_run_add))
    listing = commands.add_parser("list", help="the registered datasets")
    listing.set_defaults(handler=_guarded(_run_list))
    remove = commands.add_parser("remove", help="unregister a dataset")
    remove.add_argument("name")
    remove.add_argument(
        "--purge", action="store_true", help="also delete its folders under the data root"
    )
    remove.set_defaults(handler=_guarded(_run_remove))
    sync = commands.add_parser("sync", help="make the Dagster partitions match the registry")
    sync.set_defaults(handler=_guarded(_run_sync))


def main(argv: Sequence[str] | None = None) -> int:
    return plain_cli.main(
        argv, extra_commands=[add_dataset_commands, add_summary_command, add_profile_command]
    )


if __name__ == "__main__":
    sys.exit(main())
