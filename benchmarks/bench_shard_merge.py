"""What sharding costs: merging shard files into one feature file, against the extraction
that produced them.

    python benchmarks/bench_shard_merge.py [--rows 200000] [--dim 517] [--shards 8]

Writes ``--shards`` feature files (random float32, region-feature shape by default), merges
them with ``merge_shard_files`` and prints wall seconds, MB/s of float data, peak resident
memory above the start (it must not grow with the rows: the merge streams row groups), and
the extraction time the same rows take at a given rate (``--extract-rows-per-second``; the
default is the region-feature rate of ``make run`` on 2 CPU cores, 387,622 rows in 47 s) so
the merge can be read as a share of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_retrieval_eval import PeakRss

from ops.features.shards import merge_shard_files, plan_shards, shard_file
from ops.storage.parquet_io import FeatureWriter

CHUNK_ROWS = 4096


def write_shards(folder: Path, rows: int, dim: int, shards: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for spec in plan_shards(rows, shards):
        path = shard_file(folder / "merged.parquet", spec, "bench")
        columns = {"image_id": pa.string(), "region_id": pa.string()}
        with FeatureWriter(path, columns, dim, {"kind": "region"}) as writer:
            for begin in range(spec.start, spec.stop, CHUNK_ROWS):
                end = min(begin + CHUNK_ROWS, spec.stop)
                ids = np.array([f"i{k // 200}" for k in range(begin, end)])
                regions = np.array([f"i{k // 200}/r{k % 200}" for k in range(begin, end)])
                matrix = rng.random((end - begin, dim), dtype=np.float32)
                writer.write({"image_id": ids, "region_id": regions}, matrix)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=517)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--extract-rows-per-second", type=float, default=8000.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_shards(folder, args.rows, args.dim, args.shards)
        shard_bytes = sum(path.stat().st_size for path in paths)
        with PeakRss() as memory:
            started = time.perf_counter()
            rows = merge_shard_files(paths, folder / "merged.parquet")
            seconds = time.perf_counter() - started
    assert rows == args.rows
    megabytes = args.rows * args.dim * 4 / 1e6
    extraction = args.rows / args.extract_rows_per_second
    print(f"rows {args.rows:,} × dim {args.dim} in {args.shards} shards")
    print(f"float data {megabytes:,.0f} MB; shard files {shard_bytes / 1e6:,.0f} MB on disk")
    print(f"merge: {seconds:.2f} s, {megabytes / seconds:,.0f} MB/s")
    print(f"peak RSS above start: {memory.peak - memory.start:.0f} MiB")
    print(
        f"extraction of the same rows at {args.extract_rows_per_second:,.0f} rows/s: "
        f"{extraction:,.0f} s → merge = {100 * seconds / extraction:.1f} % of it"
    )


if __name__ == "__main__":
    main()
