"""Cost of each pipeline stage as the data grows, at the paper's dimensions.

For each fraction of a paper dataset it writes a precomp folder directly (4,096-d image
features, five captions of realistic length per image; no CNN), registers it in a fresh data
root and Dagster instance, and materializes the real assets stage by stage, each stage in its
own ``dagster asset materialize`` process so that its peak RSS is its own (read from the
kernel's accounting of that process, ``wait4``). Per stage and size it prints seconds, seconds
per item, peak RSS and the bytes the stage added to the data root.

    python benchmarks/scale.py --kind flickr30k --fractions 0.125 0.25 0.5 --json scale.json
    python benchmarks/scale.py --kind entities --fractions 0.0625 0.125 0.25 --json phrase.json

``--kind entities`` measures the phrase task instead (``benchmarks/scale_entities.py``): region
tables at fractions of Flickr30K Entities' 6.4 million rows, stored as ``--feature-dtype``.

``--text paper`` computes the paper's text features (word2vec trained on the training
captions, ICA, Fisher vectors with 30 components, PCA to 6,000-d); the default ``mean`` uses
the mean word vector, which leaves every other stage as it is. Each stage process pays the
same start-up (imports, instance); the ``startup`` row measures it once so that it can be
subtracted. Training runs a fixed number of steps (``--steps``) of one epoch, so its seconds
per item are per training image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from ops.data.tables import CAPTIONS_PER_IMAGE

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Images per split of the paper's datasets (Karpathy splits; COCO's test is the 5K list).
PAPER_SIZES = {
    "flickr30k": {"train": 29_783, "dev": 1_000, "test": 1_000},
    "coco": {"train": 113_287, "dev": 5_000, "testall": 5_000},
}
# Datasets whose validation and test splits keep their full size at every fraction: COCO's
# Karpathy val and test are 5,000 images however much training data there is, and its 5-fold
# 1K and 5K protocols need all of them.
FIXED_EVAL_SPLITS = {"coco"}
IMAGE_DIM = 4_096
# Flickr30K and COCO captions average 12.3 and 10.5 words.
WORDS_PER_CAPTION = {"flickr30k": 12, "coco": 10}
VOCABULARY = 8_000

STAGES: list[tuple[str, list[str]]] = [
    ("tables", ["raw_dataset", "images", "captions", "phrases"]),
    ("image_features", ["image_features"]),
    ("text_features", ["word_vectors", "text_features"]),
    # No phrase boxes in a precomp dataset: these materialize as skipped, which the graph reads.
    ("phrase_assets_skipped", ["region_proposals", "region_features", "phrase_features"]),
    ("graph", ["neighborhood_graph"]),
    ("train_embedding", ["image_sentence_embedding_net"]),
    ("train_similarity", ["image_sentence_similarity_net"]),
    ("evaluation", ["retrieval_eval"]),
    ("index", ["retrieval_index"]),
]


@dataclass
class StageCost:
    stage: str
    scale: float
    items: int
    seconds: float
    peak_rss_bytes: int
    disk_bytes: int


def write_precomp(folder: Path, kind: str, fraction: float, seed: int = 0) -> dict[str, int]:
    """A precomp folder at ``fraction`` of ``kind``'s splits (every split at least 1,000
    images, as the 1K protocol needs; the evaluation splits of :data:`FIXED_EVAL_SPLITS`
    whole); features are written in blocks, never whole."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = np.array([f"w{n}" for n in range(VOCABULARY)])
    # Zipf-like word frequencies, as in real captions.
    frequency = 1.0 / np.arange(1, VOCABULARY + 1)
    frequency /= frequency.sum()
    sizes = {}
    for prefix, full in PAPER_SIZES[kind].items():
        if prefix == "train":
            n = round(full * fraction)
        elif kind in FIXED_EVAL_SPLITS:
            n = full
        else:
            n = max(1_000, round(full * fraction))
        sizes[prefix] = n
        matrix = np.lib.format.open_memmap(
            folder / f"{prefix}_ims.npy", "w+", np.float32, (n, IMAGE_DIM)
        )
        for start in range(0, n, 2_000):
            block = rng.random((min(2_000, n - start), IMAGE_DIM), dtype=np.float32)
            matrix[start : start + len(block)] = block
        matrix.flush()
        del matrix
        lengths = rng.poisson(WORDS_PER_CAPTION[kind], size=CAPTIONS_PER_IMAGE * n).clip(3, 40)
        with open(folder / f"{prefix}_caps.txt", "w", encoding="utf-8") as handle:
            for length in lengths:
                handle.write(" ".join(rng.choice(words, size=length, p=frequency)) + "\n")
    return sizes


def _run_config(text: str, steps: int, protocols: list[str], feature_dtype: str) -> dict:
    text_config = {"method": "mean"}
    words = {"source": "word2vec_train", "word2vec_dim": 300}
    if text == "paper":
        text_config = {
            "method": "fisher",
            "fisher_components": 30,
            "word_dim": 300,
            "word_transform": "ica",
            "pca_dim": 6_000,
        }
    # Validation on at most 1,000 images, as Flickr30K's whole val split: the similarity
    # network scores every pair, and COCO's 5,000 would cost 25 times as much per epoch.
    training = {
        "epochs": 1,
        "max_train_steps_per_epoch": steps,
        "early_stopping_patience": None,
        "val_max_images": 1_000,
    }
    return {
        "execution": {"config": {"in_process": {}}},
        "ops": {
            "image_features": {"config": {"feature_dtype": feature_dtype}},
            "word_vectors": {"config": words},
            "text_features": {"config": text_config},
            "image_sentence_embedding_net": {"config": training},
            "image_sentence_similarity_net": {"config": training},
            "retrieval_eval": {"config": {"protocols": protocols}},
        },
    }


def measured(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; its output goes to stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=sys.stderr, stderr=sys.stderr)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, int(usage.ru_maxrss) * 1024


def disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _stage_items(stage: str, sizes: dict[str, int], steps: int, batch: int) -> int:
    images = sum(sizes.values())
    if stage in ("tables", "image_features", "phrase_assets_skipped"):
        return images
    if stage in ("text_features", "graph"):
        return CAPTIONS_PER_IMAGE * images
    if stage.startswith("train"):
        return steps * batch
    if stage == "evaluation":
        return CAPTIONS_PER_IMAGE * (images - sizes["train"])
    return images  # index: every image and caption is embedded; counted per image


def measure_fraction(
    kind: str,
    fraction: float,
    work: Path,
    text: str,
    steps: int,
    feature_dtype: str = "float32",
    protocols: list[str] | None = None,
) -> list[StageCost]:
    folder = work / f"{kind}_{fraction:g}"
    sizes = write_precomp(folder / "precomp", kind, fraction)
    root, home = folder / "data", folder / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TWOBRANCH_DATA": str(root), "DAGSTER_HOME": str(home)}
    name = f"{kind}_{str(fraction).replace('.', '_')}"
    twobranch = str(BIN / "twobranch")
    subprocess.run(
        [twobranch, "dataset", "add", name, "--source", "precomp", "--path", folder / "precomp"],
        env=env,
        check=True,
        stdout=sys.stderr,
    )
    subprocess.run([twobranch, "dataset", "sync"], env=env, check=True, stdout=sys.stderr)
    protocols = protocols or (["1k", "5fold_1k", "5k"] if kind == "coco" else ["1k"])
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(_run_config(text, steps, protocols, feature_dtype)))
    costs = [
        StageCost(
            "precomp_folder", fraction, sum(sizes.values()), 0.0, 0, disk_bytes(folder / "precomp")
        )
    ]
    for stage, assets in STAGES:
        before = disk_bytes(root) if root.exists() else 0
        command = [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "assets.definitions",
            "--select",
            ",".join(assets),
            "--partition",
            name,
            "-c",
            str(config),
        ]
        seconds, peak = measured(command, env)
        disk = (disk_bytes(root) if root.exists() else 0) - before
        items = _stage_items(stage, sizes, steps, 128)
        costs.append(StageCost(stage, fraction, items, seconds, peak, disk))
        print(f"  {stage:18} {seconds:8.1f} s  {peak / 2**30:6.2f} GiB", file=sys.stderr)
    shutil.rmtree(folder / "precomp")
    return costs


def startup_cost(work: Path) -> StageCost:
    """One stage process that materializes nothing: imports and instance start-up alone."""
    home = work / "startup_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "TWOBRANCH_DATA": str(work / "empty")}
    command = [str(BIN / "dagster"), "asset", "list", "-m", "assets.definitions"]
    seconds, peak = measured(command, env)
    return StageCost("startup", 0.0, 0, seconds, peak, 0)


def print_table(costs: list[StageCost]) -> None:
    print("| stage | scale | items | seconds | s/item | peak RSS GiB | disk MB |")
    print("|---|---|---|---|---|---|---|")
    for cost in costs:
        per_item = f"{cost.seconds / cost.items:.2e}" if cost.items else "-"
        print(
            f"| {cost.stage} | {cost.scale:g} | {cost.items:,} | {cost.seconds:.1f} | "
            f"{per_item} | {cost.peak_rss_bytes / 2**30:.2f} | {cost.disk_bytes / 1e6:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=[*sorted(PAPER_SIZES), "entities"], default="flickr30k")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5])
    parser.add_argument("--text", choices=["mean", "paper"], default="mean")
    parser.add_argument("--steps", type=int, default=50, help="training steps per network")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument(
        "--protocols",
        nargs="+",
        default=None,
        help="retrieval_eval's protocols (default: COCO 1k 5fold_1k 5k, Flickr30K 1k)",
    )
    parser.add_argument(
        "--feature-dtype",
        choices=["float32", "float16"],
        default=None,
        help="how image/region features are stored (default: float32; entities: float16)",
    )
    args = parser.parse_args()
    # Absolute: Dagster refuses a relative DAGSTER_HOME.
    work = (args.work or Path(tempfile.mkdtemp(prefix="twobranch_scale_"))).resolve()
    if args.kind == "entities":
        from scale_entities import entities_startup

        costs = [entities_startup(work)]
    else:
        costs = [startup_cost(work)]
    for fraction in args.fractions:
        print(f"{args.kind} at {fraction:g}", file=sys.stderr)
        if args.kind == "entities":
            from scale_entities import measure_entities

            dtype = args.feature_dtype or "float16"
            costs += measure_entities(fraction, work, args.steps, dtype)
        else:
            dtype = args.feature_dtype or "float32"
            costs += measure_fraction(
                args.kind, fraction, work, args.text, args.steps, dtype, args.protocols
            )
    print_table(costs)
    if args.json:
        args.json.write_text(json.dumps([asdict(cost) for cost in costs], indent=2) + "\n")


if __name__ == "__main__":
    main()
