"""Ablations on stored features of a materialized dataset (the synthetic one by default).

1. The embedding network's neighborhood constraint: the paper's (sentences of the same
   image) against the graph's kNN sentence neighbors as well (``knn_sentence_neighbors``),
   beside the term switched off and triplet sampling; with sentence-to-sentence retrieval
   (t2t), where the constraint shows most.
2. Retrieval with the similarity network: each network alone, and two-stage (embedding top-k
   rescored by embedding + w × similarity, w chosen on validation) against the former rerank
   by the similarity score alone (a very large w).
3. With ``--phrase-neighbor``, instead: the phrase–region embedding network without and with
   the phrase–phrase neighborhood term (phrases of the same entity chain are neighbors,
   ``lambda_phrase_neighbor``), by phrase localization accuracy on the test split. It needs
   the region and phrase features, proposals and neighborhood graph of a ``make run``.

Every variant is trained from the neighborhood graph the way the training assets do (a
graph built from the stored features, training split only) and reported on the validation
and test splits.

    # a reduced synthetic dataset into its own data root, then the ablation (about 45 min
    # on two busy cores)
    .venv/bin/python benchmarks/ablation_synthetic.py --data-root /tmp/ablation \\
        --prepare 2000,400,400 --epochs 10
    # or on the features of the last `make run`
    .venv/bin/python benchmarks/ablation_synthetic.py --epochs 15
    # the phrase–phrase term, on the features, proposals and graph of the last `make run`
    .venv/bin/python benchmarks/ablation_synthetic.py --phrase-neighbor --epochs 6
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ops.data.dataset_store import load_dataset_table
from ops.evaluation.localization_model import evaluate_localization
from ops.evaluation.retrieval import sentence_retrieval_rows
from ops.evaluation.settings import RetrievalEvalSettings
from ops.evaluation.single_stage import evaluate_retrieval_single
from ops.evaluation.two_stage import (
    choose_weight,
    evaluate_two_stage,
    two_stage_candidates,
)
from ops.graph.build import GraphSettings, graph_edges
from ops.graph.store import write_graph
from ops.storage.parquet_io import read_features, read_table
from ops.storage.paths import data_root
from ops.training.config import TrainConfig
from ops.training.graph_inputs import image_sentence_from_graph, phrase_region_from_graph
from ops.training.inputs import first_images, image_sentence_splits, phrase_region_splits
from ops.training.trainer import train

DEMO = {
    "lr": 1e-3,
    "hidden_dim": 1024,
    "embed_dim": 256,
    "margin": 0.2,
    "dropout": 0.1,
    "batch_images": 128,
}
SIMILARITY = {"lr": 1e-3, "hidden_dim": 1024, "embed_dim": 256, "dropout": 0.1}
VARIANTS = {
    "paper: same-image neighborhoods (default)": {},
    "+ kNN sentence neighborhoods (graph knn_k)": {"knn_sentence_neighbors": True},
    "no neighborhood term": {"lambda_neighbor": 0.0},
    "triplet sampling + neighborhood term": {"sampler": "triplet"},
}
PHRASE_VARIANTS = {
    "phrase task, no phrase–phrase term (default)": {},
    "+ phrase–phrase term over entity chains, λ = 0.1": {"lambda_phrase_neighbor": 0.1},
}
PHRASE_VAL_IMAGES = 250  # as the demo's phrase training validates
RETRIEVAL_EVAL = RetrievalEvalSettings()  # the pipeline's rerank_k and weight grid
PURE_RERANK_WEIGHT = 1e4  # the similarity score decides the top-k order alone


def prepare(root: Path, sizes: str, seed: int) -> None:
    """Materialize a synthetic dataset of ``train,val,test`` images and its image and text
    features under ``root`` (in process, with the real assets)."""
    import dagster as dg

    from assets.definitions import ALL_ASSETS
    from assets.partitions import sync_dataset_partitions
    from assets.resources import ComputeSettings, TwobranchStorage

    train_n, val_n, test_n = (int(n) for n in sizes.split(","))
    raw = {
        "synthetic_train_images": train_n,
        "synthetic_val_images": val_n,
        "synthetic_test_images": test_n,
        "seed": seed,
    }
    selection = ["raw_dataset", "images", "captions", "phrases", "image_features"]
    selection += ["word_vectors", "text_features"]
    instance = dg.DagsterInstance.ephemeral()
    sync_dataset_partitions(instance, {"synthetic"})
    result = dg.materialize(
        assets=ALL_ASSETS,
        selection=dg.AssetSelection.assets(*selection),
        run_config={"ops": {"raw_dataset": {"config": raw}}},
        resources={
            "storage": TwobranchStorage(data_root=str(root)),
            "compute": ComputeSettings(device="auto", num_workers=2),
        },
        instance=instance,
        partition_key="synthetic",
    )
    assert result.success


def _recalls(metrics: list[dict]) -> dict[str, float]:
    frame = pd.DataFrame(metrics).set_index("direction")
    values = {f"{d}_r{k}": float(frame.loc[d, f"r{k}"]) for d in ("i2t", "t2i") for k in (1, 5, 10)}
    return values | {"rsum": float(frame["rsum"].iloc[0])}


def _single(checkpoint: Path, split) -> dict[str, float]:
    return _recalls(evaluate_retrieval_single(checkpoint, split, "all").result.metrics)


def _row(name: str, val: dict, test: dict, seconds: float | str, *extra: str) -> str:
    def cell(m: dict) -> str:
        i2t = "/".join(f"{m[f'i2t_r{k}']:.1f}" for k in (1, 5, 10))
        t2i = "/".join(f"{m[f't2i_r{k}']:.1f}" for k in (1, 5, 10))
        return f"{i2t} | {t2i} | {m['rsum']:.1f}"

    seconds = seconds if isinstance(seconds, str) else f"{seconds:.0f}"
    extra_cells = "".join(f" {value} |" for value in extra)
    return f"| {name} | {val['rsum']:.1f} | {cell(test)} |{extra_cells} {seconds} |"


def phrase_neighbor_ablation(root: Path, dataset: str, epochs: int) -> None:
    """Localization accuracy of the phrase–region embedding network per PHRASE_VARIANTS."""
    features = root / "features" / dataset
    region_path = next(features.glob("region_*.parquet"))
    phrase_path = next(features.glob("phrase_*.parquet"))
    proposals = read_table(root / "proposals" / dataset / "region_proposals.parquet")
    phrases = load_dataset_table(root, dataset, "phrases")
    splits = phrase_region_splits(region_path, proposals, phrase_path, phrases)
    train_split = phrase_region_from_graph(
        splits["train"], root / "graph" / dataset / "neighbors.parquet"
    )
    val = first_images(splits["val"], PHRASE_VAL_IMAGES)
    chains = train_split.data.phrase_chain
    shared = int((pd.Series(chains).value_counts() > 1).sum())
    print(
        f"features: {region_path.name}, {phrase_path.name}; train phrases {chains.size}, "
        f"chains {len(set(chains.tolist()))} ({shared} with two or more phrases); test "
        f"phrases {len(splits['test'].phrase_ids)}"
    )
    print("| variant | best val score (epoch) | test accuracy | upper bound | s |")
    print("|---|---|---|---|---|", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ablation-phrase-"))
    for index, (name, change) in enumerate(PHRASE_VARIANTS.items()):
        config = TrainConfig(
            task="phrase_region", device="cpu", **(DEMO | {"epochs": epochs} | change)
        )
        started = time.perf_counter()
        result = train(config, train_split.data, val.data, work / f"phrase-{index}")
        seconds = time.perf_counter() - started
        summary = evaluate_localization(
            result.best_checkpoint, splits["test"], phrases, proposals, "cpu"
        ).summary
        print(
            f"| {name} | {result.best_val_score or float('nan'):.2f} ({result.best_epoch}) | "
            f"{summary['accuracy']:.2f} | {summary['upper_bound']:.2f} | {seconds:.0f} |",
            flush=True,
        )
    print(json.dumps({"epochs": epochs, "profile": DEMO, "val_images": PHRASE_VAL_IMAGES}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--prepare", default=None, help="train,val,test images to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--knn-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--phrase-neighbor", action="store_true", help="run the phrase–phrase ablation only"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root(args.data_root)
    if args.prepare:
        prepare(root, args.prepare, args.seed)
    if args.phrase_neighbor:
        phrase_neighbor_ablation(root, args.dataset, args.epochs)
        return
    features = root / "features" / args.dataset
    image_path = next(features.glob("image_*.parquet"))
    text_path = next(features.glob("text_*.parquet"))
    splits = image_sentence_splits(image_path, text_path)
    work = Path(tempfile.mkdtemp(prefix="ablation-"))
    settings = GraphSettings(knn_k=args.knn_k)
    texts, images = read_features(text_path), read_features(image_path)
    graph = write_graph(
        work, args.dataset, settings, graph_edges(settings, texts[0], None, None, images, texts)
    )
    print(f"features: {image_path.name}, {text_path.name}; graph edges {graph.edges}")
    print(f"train/val/test images: {[len(splits[s].image_ids) for s in ('train', 'val', 'test')]}")
    header = (
        "| variant | val R-sum | test i2t R@1/5/10 | test t2i R@1/5/10 | test R-sum | "
        "test t2t R@1/5/10 | s |"
    )
    print(header + "\n|---|---|---|---|---|---|---|", flush=True)
    checkpoints: dict[str, Path] = {}
    for name, change in VARIANTS.items():
        config = TrainConfig(device="cpu", epochs=args.epochs, **(DEMO | change))
        train_split = image_sentence_from_graph(
            splits["train"], graph.path, with_knn=config.knn_sentence_neighbors
        )
        folder = work / f"embedding-{len(checkpoints)}"
        started = time.perf_counter()
        result = train(config, train_split.data, splits["val"].data, folder)
        seconds = time.perf_counter() - started
        checkpoints[name] = result.best_checkpoint
        val = _single(result.best_checkpoint, splits["val"])
        test = _single(result.best_checkpoint, splits["test"])
        (t2t,) = sentence_retrieval_rows(result.best_checkpoint, splits["test"], ["all"], "cpu")
        sentences = "/".join(f"{t2t[f'r{k}']:.1f}" for k in (1, 5, 10))
        print(_row(name, val, test, seconds, sentences), flush=True)

    config = TrainConfig(
        network="similarity", device="cpu", epochs=max(1, args.epochs // 2), **SIMILARITY
    )
    started = time.perf_counter()
    train_split = image_sentence_from_graph(splits["train"], graph.path)
    similarity = train(config, train_split.data, splits["val"].data, work / "similarity")
    seconds = time.perf_counter() - started
    embedding = checkpoints[next(iter(VARIANTS))]
    print("\n| retrieval | val R-sum | test i2t R@1/5/10 | test t2i R@1/5/10 | test R-sum | s |")
    print("|---|---|---|---|---|---|")
    for name, checkpoint, spent in (
        ("embedding network alone", embedding, "–"),
        ("similarity network alone", similarity.best_checkpoint, seconds),
    ):
        print(
            _row(
                name, _single(checkpoint, splits["val"]), _single(checkpoint, splits["test"]), spent
            ),
            flush=True,
        )
    on_val = two_stage_candidates(
        embedding, similarity.best_checkpoint, splits["val"], RETRIEVAL_EVAL.rerank_k
    )
    on_test = two_stage_candidates(
        embedding, similarity.best_checkpoint, splits["test"], RETRIEVAL_EVAL.rerank_k
    )
    choice = choose_weight(on_val, splits["val"], RETRIEVAL_EVAL.two_stage_weights)
    for name, weight in (
        (f"two-stage, w = {choice.weight:g} (chosen on val)", choice.weight),
        ("rerank by the similarity score alone (previous)", PURE_RERANK_WEIGHT),
    ):
        val = _recalls(evaluate_two_stage(on_val, splits["val"], "all", weight).result.metrics)
        test = _recalls(evaluate_two_stage(on_test, splits["test"], "all", weight).result.metrics)
        print(_row(name, val, test, "–"), flush=True)
    print("\nvalidation R-sum per weight:", choice.table[["weight", "rsum"]].to_dict("records"))
    print(json.dumps({"epochs": args.epochs, "knn_k": args.knn_k, "profile": DEMO}))


if __name__ == "__main__":
    main()
