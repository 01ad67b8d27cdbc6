"""The phrase task's cost as the region table grows, at the paper's dimensions.

For a fraction of Flickr30K Entities it writes, directly and with no CNN, what the region
assets would have written: the dataset tables (images, five captions and 15 phrases per image,
each phrase with its entity's box), the proposals file (200 proposals per image, plus each
training entity's ground-truth box), 4,096-d region features stored as ``--feature-dtype`` and
6,000-d phrase features. It then runs the real phrase steps, each in its own process: the
neighborhood graph (phrase→region positives), the split arrays (which write the row-file
caches), a fixed number of training steps of each phrase network, and phrase localization on
the test split.

Run through ``benchmarks/scale.py --kind entities``; ``python benchmarks/scale_entities.py
--stage STAGE --folder FOLDER`` is one stage's process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scale import StageCost, disk_bytes, measured

from ops.data.tables import CAPTIONS_PER_IMAGE

# Flickr30K Entities: 31,783 images (Karpathy splits), 200 proposals each plus the training
# entities' boxes: about 6.4 million region rows.
ENTITIES_SIZES = {"train": 29_783, "val": 1_000, "test": 1_000}
PROPOSALS_PER_IMAGE = 200
ENTITIES_PER_IMAGE = 8
# 513,644 phrases for 158,915 captions: about 3 a caption, 15 an image.
PHRASES_PER_IMAGE = 15
REGION_DIM = 4_096
PHRASE_DIM = 6_000
WIDTH, HEIGHT = 500, 375
TYPES = ["people", "clothing", "bodyparts", "animals", "vehicles", "instruments", "scene", "other"]
DATASET = "entities"
IMAGES_PER_BLOCK = 64
POOL_ROWS = 16_384
STAGES = [
    "graph",
    "split_arrays",
    "train_phrase_embedding",
    "train_phrase_similarity",
    "localization_eval",
]


def entities_sizes(fraction: float) -> dict[str, int]:
    return {split: max(1, round(n * fraction)) for split, n in ENTITIES_SIZES.items()}


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.uniform(0, WIDTH * 0.7, n)
    y1 = rng.uniform(0, HEIGHT * 0.7, n)
    w = rng.uniform(30, WIDTH - x1)
    h = rng.uniform(30, HEIGHT - y1)
    return np.stack([x1, y1, np.minimum(x1 + w, WIDTH), np.minimum(y1 + h, HEIGHT)], axis=1)


def _image_tables(images: pd.DataFrame, rng: np.random.Generator):
    """Captions, phrases and proposals of ``images``: three proposals of each entity are
    jittered copies of its box (the graph's positives), the rest are anywhere."""
    n = len(images)
    image_ids = images["image_id"].to_numpy()
    splits = images["split"].to_numpy()
    entity_boxes = _boxes(rng, n * ENTITIES_PER_IMAGE).reshape(n, ENTITIES_PER_IMAGE, 4)
    caption_image = np.repeat(np.arange(n), CAPTIONS_PER_IMAGE)
    caption_index = np.tile(np.arange(CAPTIONS_PER_IMAGE), n)
    caption_ids = [f"{image_ids[i]}#{k}" for i, k in zip(caption_image, caption_index, strict=True)]
    captions = pd.DataFrame(
        {
            "dataset": DATASET,
            "caption_id": caption_ids,
            "image_id": image_ids[caption_image],
            "split": splits[caption_image],
            "caption_index": caption_index,
            "text": "a man in a red shirt rides a bike down the street",
        }
    )
    phrase_image = np.repeat(np.arange(n), PHRASES_PER_IMAGE)
    phrase_index = np.tile(np.arange(PHRASES_PER_IMAGE), n)
    entity = phrase_index % ENTITIES_PER_IMAGE
    gt = entity_boxes[phrase_image, entity]
    pairs = list(zip(phrase_image, phrase_index, strict=True))
    phrases = pd.DataFrame(
        {
            "dataset": DATASET,
            "phrase_id": [f"{image_ids[i]}#{k}" for i, k in pairs],
            "caption_id": [f"{image_ids[i]}#{k // 3}" for i, k in pairs],
            "image_id": image_ids[phrase_image],
            "split": splits[phrase_image],
            "text": "a red shirt",
            "phrase_type": np.array(TYPES)[entity],
            "all_types": np.array(TYPES)[entity],
            "chain_id": [f"{image_ids[i]}/e{e}" for i, e in zip(phrase_image, entity, strict=True)],
            "first_word_index": 0,
            "gt_x1": gt[:, 0],
            "gt_y1": gt[:, 1],
            "gt_x2": gt[:, 2],
            "gt_y2": gt[:, 3],
            "n_boxes": 1,
        }
    )
    proposals = []
    for i in range(n):
        jitter = rng.normal(0, 4, (ENTITIES_PER_IMAGE * 3, 4))
        near = np.repeat(entity_boxes[i], 3, axis=0) + jitter
        anywhere = _boxes(rng, PROPOSALS_PER_IMAGE - len(near))
        boxes = np.clip(np.concatenate([near, anywhere]), 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
        ids = [f"{image_ids[i]}/p{k}" for k in range(PROPOSALS_PER_IMAGE)]
        sources = ["proposal"] * PROPOSALS_PER_IMAGE
        if splits[i] == "train":
            boxes = np.concatenate([boxes, entity_boxes[i]])
            ids += [f"{image_ids[i]}/gt{k}" for k in range(ENTITIES_PER_IMAGE)]
            sources += ["ground_truth"] * ENTITIES_PER_IMAGE
        proposals.append(
            pd.DataFrame(
                {
                    "image_id": image_ids[i],
                    "region_id": ids,
                    "x1": boxes[:, 0],
                    "y1": boxes[:, 1],
                    "x2": boxes[:, 2],
                    "y2": boxes[:, 3],
                    "source": sources,
                    "rank": np.arange(len(ids), dtype=np.int32),
                }
            )
        )
    return captions, phrases, pd.concat(proposals, ignore_index=True)


class RowPool:
    """Feature rows drawn once and handed out as windows at random offsets: millions of rows
    without paying the random generator for each (what the steps cost does not depend on the
    values)."""

    def __init__(self, rng: np.random.Generator, dim: int, dtype: str, relu: bool) -> None:
        values = rng.standard_normal((POOL_ROWS, dim), dtype=np.float32)
        if relu:  # post-ReLU fc7-like values: half of them exactly zero
            np.maximum(values, 0, out=values)
        self.values = values.astype(dtype)
        self.rng = rng

    def rows(self, n: int) -> np.ndarray:
        start = int(self.rng.integers(POOL_ROWS))
        return np.take(self.values, (start + np.arange(n)) % POOL_ROWS, axis=0)


def write_entities(folder: Path, fraction: float, feature_dtype: str, seed: int = 0) -> dict:
    """The dataset tables (published under ``folder/data``) and the proposal, region and phrase
    files at ``fraction`` of Flickr30K Entities, written block by block."""
    import pyarrow.parquet as pq

    from ops.data.dataset_store import publish_dataset_tables
    from ops.data.tables import DatasetTables
    from ops.features.proposals import PROPOSAL_SCHEMA
    from ops.storage.parquet_io import FeatureWriter

    rng = np.random.default_rng(seed)
    region_pool = RowPool(rng, REGION_DIM, feature_dtype, relu=True)
    phrase_pool = RowPool(rng, PHRASE_DIM, "float32", relu=False)
    sizes = entities_sizes(fraction)
    images = pd.DataFrame(
        [
            {"dataset": DATASET, "image_id": f"{split}{k}", "split": split}
            for split, n in sizes.items()
            for k in range(n)
        ]
    )
    images["path"], images["width"], images["height"] = None, WIDTH, HEIGHT
    files = {
        "region_proposals": folder / "proposals.parquet",
        "region_features": folder / "region.parquet",
        "phrase_features": folder / "phrase.parquet",
    }
    string = pa.string()
    all_captions, all_phrases = [], []
    region_rows = 0
    with (
        pq.ParquetWriter(files["region_proposals"], PROPOSAL_SCHEMA, compression="zstd") as boxes,
        FeatureWriter(
            files["region_features"],
            {"image_id": string, "region_id": string},
            REGION_DIM,
            dtype=feature_dtype,  # type: ignore[arg-type]
        ) as regions,
        FeatureWriter(
            files["phrase_features"],
            {"phrase_id": string, "image_id": string, "split": string},
            PHRASE_DIM,
        ) as phrase_file,
    ):
        for start in range(0, len(images), IMAGES_PER_BLOCK):
            block = images.iloc[start : start + IMAGES_PER_BLOCK]
            captions, phrases, proposals = _image_tables(block, rng)
            all_captions.append(captions)
            all_phrases.append(phrases)
            table = pa.Table.from_pandas(proposals, PROPOSAL_SCHEMA, preserve_index=False)
            boxes.write_table(table)
            regions.write(proposals, region_pool.rows(len(proposals)))
            region_rows += len(proposals)
            phrase_file.write(phrases, phrase_pool.rows(len(phrases)))
    captions, phrases = pd.concat(all_captions), pd.concat(all_phrases)
    tables = DatasetTables(DATASET, images, captions, phrases).conformed()
    publish_dataset_tables(folder / "data", tables)
    manifest = {
        "files": {name: str(path) for name, path in files.items()},
        "sizes": sizes,
        "region_rows": region_rows,
        "phrases": {split: int((phrases["split"] == split).sum()) for split in sizes},
    }
    (folder / "entities.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _train_config(network: str, steps: int):
    from ops.training.config import TrainConfig

    values = {"lr": 5e-5, "hidden_dim": 1024} if network == "similarity" else {}
    return TrainConfig(
        task="phrase_region",
        network=network,
        epochs=1,
        max_train_steps_per_epoch=steps,
        early_stopping_patience=None,
        device="cpu",
        **values,
    )


def run_stage(stage: str, folder: Path, steps: int) -> None:
    """One stage, in this process (its peak RSS is the stage's own)."""
    from ops.data.dataset_store import load_dataset_table

    manifest = json.loads((folder / "entities.json").read_text())
    files, root = manifest["files"], folder / "data"
    if stage == "graph":
        from ops.graph.build import GraphSettings
        from ops.graph.store import build_graph

        summary = build_graph(root, DATASET, GraphSettings(), files["region_proposals"])
        (folder / "graph.json").write_text(summary.manifest(DATASET).model_dump_json())
    elif stage == "split_arrays":
        from ops.training.inputs import phrase_region_splits

        phrase_region_splits(
            files["region_features"],
            files["region_proposals"],
            files["phrase_features"],
            load_dataset_table(root, DATASET, "phrases"),
        )
    elif stage.startswith("train_phrase_"):
        from ops.handoffs import NeighborhoodGraphFile
        from ops.training.run import run_training

        network = stage.removeprefix("train_phrase_")
        graph = NeighborhoodGraphFile.model_validate_json((folder / "graph.json").read_text())
        run = run_training(root, DATASET, files, _train_config(network, steps), graph)
        (folder / f"{network}.json").write_text(run.manifest.model_dump_json())
    elif stage == "localization_eval":
        from ops.evaluation.localization_model import evaluate_localization
        from ops.features.region_table import region_table
        from ops.training.inputs import phrase_region_splits

        proposals = region_table(files["region_proposals"])
        phrases = load_dataset_table(root, DATASET, "phrases")
        splits = phrase_region_splits(
            files["region_features"], proposals, files["phrase_features"], phrases, ("test",)
        )
        checkpoint = json.loads((folder / "embedding.json").read_text())["checkpoint"]
        result = evaluate_localization(checkpoint, splits["test"], phrases, proposals, "cpu")
        summary = json.dumps(result.summary, default=str)
        (folder / "localization.json").write_text(summary)
        print(f"localization: {summary}", file=sys.stderr)
    else:
        raise SystemExit(f"unknown stage {stage!r}; expected one of {STAGES}")


def _stage_items(stage: str, manifest: dict, steps: int) -> int:
    if stage == "graph":
        return manifest["phrases"]["train"]
    if stage == "split_arrays":
        return manifest["region_rows"]
    if stage.startswith("train"):
        return steps * 200  # phrases_per_batch
    return manifest["phrases"]["test"]


def entities_startup(work: Path) -> StageCost:
    """A stage process that imports what the stages import and does nothing else."""
    command = [sys.executable, str(Path(__file__).resolve()), "--folder", str(work), "--imports"]
    seconds, peak = measured(command)
    return StageCost("startup", 0.0, 0, seconds, peak, 0)


def measure_entities(
    fraction: float, work: Path, steps: int, feature_dtype: str, keep: bool = False
) -> list[StageCost]:
    folder = work / f"entities_{fraction:g}"
    folder.mkdir(parents=True, exist_ok=True)
    child = [sys.executable, str(Path(__file__).resolve()), "--folder", str(folder)]
    seconds, peak = measured([*child, "--write", str(fraction), "--feature-dtype", feature_dtype])
    manifest = json.loads((folder / "entities.json").read_text())
    inputs = disk_bytes(folder)
    costs = [StageCost("entities_tables", fraction, manifest["region_rows"], 0.0, 0, inputs)]
    print(f"  written in {seconds:.0f} s ({inputs / 1e9:.1f} GB)", file=sys.stderr)
    for stage in STAGES:
        before = disk_bytes(folder)
        seconds, peak = measured([*child, "--stage", stage, "--steps", str(steps)])
        items = _stage_items(stage, manifest, steps)
        costs.append(StageCost(stage, fraction, items, seconds, peak, disk_bytes(folder) - before))
        print(f"  {stage:24} {seconds:8.1f} s  {peak / 2**30:6.2f} GiB", file=sys.stderr)
    if not keep:
        import shutil

        shutil.rmtree(folder)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--write", type=float, default=None, help="write this fraction's files")
    parser.add_argument("--feature-dtype", choices=["float32", "float16"], default="float16")
    parser.add_argument("--stage", choices=STAGES, default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--imports", action="store_true", help="import the stages' modules only")
    args = parser.parse_args()
    if args.imports:
        import ops.evaluation.trained  # noqa: F401

        import ops.graph.store  # noqa: F401
        import ops.training.run  # noqa: F401
    if args.write is not None:
        write_entities(args.folder, args.write, args.feature_dtype)
    if args.stage:
        run_stage(args.stage, args.folder, args.steps)


if __name__ == "__main__":
    main()
