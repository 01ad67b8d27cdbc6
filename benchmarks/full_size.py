"""One ``full_pipeline`` run at a paper dataset's full size, with each asset's seconds and
peak RSS.

It writes a precomp folder at the full size of Flickr30K (31,783 images, 158,915 captions)
or COCO (123,287 images, 616,435 captions), 4,096-d image features and captions of realistic
length (``benchmarks/scale.py``), plus a local word2vec binary for the captions' vocabulary
(the paper's GoogleNews file stands in for nothing here: only its format and size per word
matter). It registers the dataset in a fresh data root and Dagster instance and runs
``dagster job execute -j full_pipeline`` with the paper profile's text settings (300-d word
vectors, ICA, Fisher vectors of 30 components, PCA to 6,000-d) and training settings (every
default), one epoch. Each step runs in its own process (multiprocess executor, one step at a
time); a sampler records every process's high-water RSS (``VmHWM``), and the run's event log
maps processes to steps.

    python benchmarks/full_size.py --kind flickr30k --work /tmp/full --json f30k.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import BIN, PAPER_SIZES, VOCABULARY, disk_bytes, write_precomp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORD_DIM = 300
SAMPLE_SECONDS = 0.5


@dataclass
class StepCost:
    step: str
    seconds: float
    peak_rss_bytes: int


def write_word2vec_binary(path: Path, seed: int = 0) -> None:
    """A gzipped word2vec binary file with a vector for every word the captions use.

    Heavy-tailed (Laplace) coordinates, as trained word vectors have: on Gaussian vectors the
    paper's ICA step finds no independent directions and runs to its iteration limit."""
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wb") as handle:
        handle.write(f"{VOCABULARY} {WORD_DIM}\n".encode())
        for n in range(VOCABULARY):
            vector = rng.laplace(size=WORD_DIM).astype("<f4")
            handle.write(f"w{n} ".encode() + vector.tobytes() + b"\n")


def run_config(word_vectors: Path, protocols: list[str], pca_fit_texts: int | None) -> dict:
    fisher = {
        "method": "fisher",
        "fisher_components": 30,
        "word_dim": WORD_DIM,
        "word_transform": "ica",
        "pca_dim": 6_000,
        "pca_fit_texts": pca_fit_texts,
    }
    training = {"config": {"epochs": 1, "amp": False}}
    return {
        "execution": {"config": {"multiprocess": {"max_concurrent": 1}}},
        "ops": {
            "word_vectors": {"config": {"source": "file", "path": str(word_vectors)}},
            "text_features": {"config": fisher},
            "image_sentence_embedding_net": training,
            "image_sentence_similarity_net": training,
            "retrieval_eval": {"config": {"protocols": protocols}},
        },
    }


class HighWaterSampler(threading.Thread):
    """Polls the high-water RSS of a process and all its descendants until stopped."""

    def __init__(self, root_pid: int, record: Path) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        # Rewritten as the run goes, so an interrupted run still has its finished steps' peaks.
        self.record = record
        self.peaks: dict[int, int] = {}
        self.peak_total = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            for pid in self._tree():
                high, current = _memory(pid)
                if high:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), high)
                total += current
            self.peak_total = max(self.peak_total, total)
            self._write()
            time.sleep(SAMPLE_SECONDS)

    def _write(self) -> None:
        partial = self.record.with_suffix(".tmp")
        partial.write_text(json.dumps({"total": self.peak_total, "pids": self.peaks}))
        partial.replace(self.record)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
        found, pending = [], [self.root_pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending += children.get(pid, [])
        return found


def _memory(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of ``pid`` in bytes; zeros when it has gone."""
    high = current = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                high = int(line.split()[1]) * 1024
            elif line.startswith("VmRSS:"):
                current = int(line.split()[1]) * 1024
    except OSError:
        pass
    return high, current


def step_costs(home: Path, peaks: dict[int, int]) -> list[StepCost]:
    """Each step's seconds (start to success) and its process's peak RSS, from the event log."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    started: dict[str, tuple[float, int]] = {}
    costs = []
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = (entry.timestamp, event.pid or 0)
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_SKIPPED):
            begin, pid = started.get(event.step_key, (entry.timestamp, 0))
            costs.append(StepCost(event.step_key, entry.timestamp - begin, peaks.get(pid, 0)))
    print(f"run {run.run_id}: {run.status.value}", file=sys.stderr)
    return costs


def print_costs(costs: list[StepCost], peak_total: int) -> None:
    print(f"peak RSS of all processes together: {peak_total / 2**30:.2f} GiB")
    print("| asset | seconds | peak RSS GiB |")
    print("|---|---|---|")
    for cost in costs:
        print(f"| {cost.step} | {cost.seconds:.0f} | {cost.peak_rss_bytes / 2**30:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(PAPER_SIZES), default="flickr30k")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--fraction", type=float, default=1.0, help="of the full size (smoke runs)")
    parser.add_argument(
        "--pca-fit-texts", type=int, default=None, help="the text PCA's fit sample; default all"
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        default=None,
        help="retrieval_eval's protocols (default: COCO 1k 5fold_1k 5k, Flickr30K 1k); the "
        "similarity network scores every pair, so 5K costs five times 5fold_1k",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="only print the steps finished so far in --work (a run still going, or stopped)",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    folder, root, home = work / "precomp", work / "data", work / "dagster_home"
    if args.summarize:
        record = json.loads((work / "peaks.json").read_text())
        peaks = {int(pid): peak for pid, peak in record["pids"].items()}
        print_costs(step_costs(home, peaks), record["total"])
        return
    home.mkdir(parents=True, exist_ok=True)
    sizes = write_precomp(folder, args.kind, args.fraction)
    words = work / "word2vec.bin.gz"
    write_word2vec_binary(words)
    env = {**os.environ, "TWOBRANCH_DATA": str(root), "DAGSTER_HOME": str(home)}
    name = args.kind
    twobranch = str(BIN / "twobranch")
    for command in (
        ["dataset", "add", name, "--source", "precomp", "--path", str(folder)],
        ["dataset", "sync"],
    ):
        subprocess.run([twobranch, *command], env=env, check=True, stdout=sys.stderr)
    protocols = args.protocols or (["1k", "5fold_1k", "5k"] if args.kind == "coco" else ["1k"])
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(words, protocols, args.pca_fit_texts)))
    command = [
        str(BIN / "dagster"),
        *("job", "execute", "-m", "assets.definitions", "-j", "full_pipeline"),
        *("--tags", json.dumps({"dagster/partition": name}), "-c", str(config)),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=sys.stderr, stderr=sys.stderr)
    sampler = HighWaterSampler(process.pid, work / "peaks.json")
    sampler.start()
    code = process.wait()
    wall = time.perf_counter() - started
    sampler.stop()
    costs = step_costs(home, sampler.peaks)
    print(f"{args.kind}: {sizes} images; wall {wall:.0f} s, exit {code}")
    print(f"data root: {disk_bytes(root) / 1e9:.1f} GB")
    print_costs(costs, sampler.peak_total)
    if args.json:
        rows = {
            "kind": args.kind,
            "sizes": sizes,
            "wall_seconds": wall,
            "exit_code": code,
            "peak_total_rss_bytes": sampler.peak_total,
            "data_root_bytes": disk_bytes(root),
            "steps": [asdict(cost) for cost in costs],
        }
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
