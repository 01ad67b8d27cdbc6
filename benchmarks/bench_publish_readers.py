"""Queries during re-publishes: how many fail, and whether any shows a mix of two versions.

    python benchmarks/bench_publish_readers.py [--publishes 10] [--readers 2] [--images 20000]

A writer publishes one dataset's tables ``--publishes`` times (each version a different row
count, every id tagged with its version) and rebuilds the catalogue after each, while
``--readers`` processes run ``twobranch sql``'s query path in a loop. Every answer must show one
version whole: one tag, and that version's row count. Prints the queries run, the failed ones
(by error) and the mixed ones.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import pandas as pd

from ops.data.dataset_store import publish_dataset_tables
from ops.data.tables import DatasetTables
from ops.storage.results_store import publish_catalogue
from ops.storage.sql import run_query

DATASET = "flip"
QUERY = (
    "SELECT count(*) AS n, min(split_part(image_id, '-', 1)) AS lo, "
    f"max(split_part(image_id, '-', 1)) AS hi FROM images WHERE dataset = '{DATASET}'"
)


def image_count(version: int, base: int) -> int:
    return base + 97 * version


def version_tables(version: int, base: int) -> DatasetTables:
    ids = [f"v{version}-{i}" for i in range(image_count(version, base))]
    images = pd.DataFrame(
        {"dataset": DATASET, "image_id": ids, "split": "train", "path": "img.jpg"}
    ).assign(width=32, height=24)
    captions = pd.DataFrame(
        {
            "dataset": DATASET,
            "caption_id": [f"{i}#0" for i in ids],
            "image_id": ids,
            "split": "train",
            "caption_index": 0,
            "text": [f"caption of {i}" for i in ids],
        }
    )
    return DatasetTables(DATASET, images, captions).conformed()


def reader(root: str, base: int, stop: mp.Event, out: mp.Queue) -> None:
    counts: collections.Counter[str] = collections.Counter()
    while not stop.is_set():
        try:
            row = run_query(Path(root), QUERY).iloc[0]
        except Exception as error:  # noqa: BLE001 - every failure is the measurement
            counts[f"failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}"] += 1
            continue
        version = int(str(row["lo"])[1:])
        whole = row["lo"] == row["hi"] and int(row["n"]) == image_count(version, base)
        counts["ok" if whole else "mixed"] += 1
    out.put(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between publishes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        publish_dataset_tables(root, version_tables(0, args.images))
        publish_catalogue(root)
        stop, out = mp.Event(), mp.Queue()
        readers = [
            mp.Process(target=reader, args=(str(root), args.images, stop, out))
            for _ in range(args.readers)
        ]
        for process in readers:
            process.start()
        started = time.perf_counter()
        for version in range(1, args.publishes + 1):
            time.sleep(args.pause)
            publish_dataset_tables(root, version_tables(version, args.images))
            publish_catalogue(root)
        time.sleep(args.pause)
        stop.set()
        total: collections.Counter[str] = collections.Counter()
        for _ in readers:
            total.update(out.get())
        for process in readers:
            process.join()
        seconds = time.perf_counter() - started
    queries = sum(total.values())
    failed = sum(n for key, n in total.items() if key.startswith("failed"))
    shape = f"{args.publishes} publishes of {args.images}+ images, {args.readers} readers"
    print(f"{shape}, {seconds:.1f} s")
    print(f"queries {queries}  ok {total['ok']}  failed {failed}  mixed {total['mixed']}")
    for key, n in sorted(total.items()):
        if key.startswith("failed"):
            print(f"  {n:6d}  {key}")


if __name__ == "__main__":
    main()
