"""The report asset: a self-contained HTML report of the evaluated models."""

import time

import dagster as dg
import numpy as np
import pandas as pd
import torch

from assets.metadata import png_bytes_value
from assets.partitions import DATASETS
from assets.resources import ComputeSettings, TwobranchStorage
from assets.skips import skip_reason
from ops.dataset_store import load_dataset_table
from ops.evaluation import load_trained, split_embeddings
from ops.features.device import resolve_device
from ops.paths import report_dir
from ops.report import (
    ReportContent,
    grounding_gallery,
    img_tag,
    per_type_bars,
    recall_curves,
    retrieval_gallery,
    training_curves,
    write_report,
)
from ops.results_store import read_result
from ops.training_inputs import image_sentence_splits

REPORT_GROUP = "evaluation"


class ReportConfig(dg.Config):
    gallery_captions: int = 4
    gallery_phrases: int = 6


def _retrieval_gallery(run: dict, n: int, root, device_name: str) -> bytes:
    features = run["features"]
    split = image_sentence_splits(features["image_features"], features["text_features"], ("test",))[
        "test"
    ]
    device = resolve_device(device_name)
    model, config = load_trained(run["checkpoint"], device)
    image_emb, text_emb = split_embeddings(model, split, device, config.amp)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(split.caption_ids), size=min(n, len(split.caption_ids)), replace=False)
    with torch.no_grad():
        top = (text_emb[torch.as_tensor(picks)] @ image_emb.T).topk(5, dim=1).indices.cpu()
    captions = load_dataset_table(root, run["dataset"], "captions").set_index("caption_id")
    paths = load_dataset_table(root, run["dataset"], "images").set_index("image_id")["path"]
    texts, top_paths, truth = [], [], []
    for row, pick in enumerate(picks):
        texts.append(str(captions.loc[split.caption_ids[pick], "text"]))
        ranked = [split.image_ids[i] for i in top[row].tolist()]
        top_paths.append([paths[i] for i in ranked])
        true_image = split.image_ids[split.data.caption_image[pick]]
        truth.append(ranked.index(true_image) if true_image in ranked else None)
    return retrieval_gallery(texts, top_paths, truth)


def _grounding_gallery(run: dict, n: int, root) -> bytes:
    results = read_result(root, "localization_results", run["run_id"])
    phrases = load_dataset_table(root, run["dataset"], "phrases").set_index("phrase_id")
    proposals = pd.read_parquet(run["features"]["region_proposals"]).set_index("region_id")
    paths = load_dataset_table(root, run["dataset"], "images").set_index("image_id")["path"]
    sample = results.sample(n=min(n, len(results)), random_state=0)
    items = []
    for row in sample.itertuples():
        phrase = phrases.loc[row.phrase_id]
        predicted = None
        if isinstance(row.chosen_region_id, str) and row.chosen_region_id in proposals.index:
            predicted = proposals.loc[row.chosen_region_id, ["x1", "y1", "x2", "y2"]].tolist()
        items.append(
            {
                "path": paths[phrase["image_id"]],
                "text": str(phrase["text"]),
                "true_box": [phrase[c] for c in ("gt_x1", "gt_y1", "gt_x2", "gt_y2")],
                "predicted_box": predicted,
            }
        )
    return grounding_gallery(items)


@dg.asset(group_name=REPORT_GROUP, kinds={"html"}, partitions_def=DATASETS)
def report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    image_sentence_embedding_net: dict,
    image_sentence_similarity_net: dict,
    phrase_region_embedding_net: dict,
    phrase_region_similarity_net: dict,
    retrieval_eval: dict,
    localization_eval: dict,
    storage: TwobranchStorage,
    compute: ComputeSettings,
) -> dg.Output[dict]:
    """``reports/<run_id>/report.html``: training curves, Recall@K for K = 1..50, every run
    beside the paper's published numbers, grounding accuracy per phrase type, and galleries
    of retrieved images and localized phrases."""
    started = time.perf_counter()
    root = storage.root
    phrases_skipped = skip_reason(localization_eval)
    trained = [image_sentence_embedding_net, image_sentence_similarity_net]
    if not phrases_skipped:
        trained += [phrase_region_embedding_net, phrase_region_similarity_net]
    runs = pd.DataFrame(
        [
            {
                "task": run["task"],
                "network": run["network"],
                "run_id": run["run_id"],
                "device": run["device"],
                "best_epoch": run["best_epoch"],
                "best validation score": run["best_val_score"],
                "champion": "yes" if run["champion"] else "no",
                "why": run["champion_reason"],
            }
            for run in trained
        ]
    )
    epochs = {
        f"{run['task']} {run['network']}": read_result(
            root, "epoch_metrics", run["run_id"]
        ).sort_values("epoch")
        for run in trained
    }
    images = {
        "training_curves": training_curves(epochs),
        "recall_at_k": recall_curves(retrieval_eval["recall_curves"]),
        "retrieval_gallery": _retrieval_gallery(
            image_sentence_embedding_net, config.gallery_captions, root, compute.device
        ),
    }
    sections = [
        ("Training curves", img_tag(images["training_curves"], "training curves")),
        ("Recall@K", img_tag(images["recall_at_k"], "recall at K")),
        (
            "Retrieval gallery (top-5 images per sentence; true image framed)",
            img_tag(images["retrieval_gallery"], "retrieval gallery"),
        ),
    ]
    if not phrases_skipped:
        images["per_type"] = per_type_bars(pd.DataFrame(localization_eval["per_type"]))
        images["grounding_gallery"] = _grounding_gallery(
            phrase_region_embedding_net, config.gallery_phrases, root
        )
        sections += [
            ("Grounding accuracy per phrase type", img_tag(images["per_type"], "per type")),
            (
                "Grounding gallery (green: ground truth, red: prediction)",
                img_tag(images["grounding_gallery"], "grounding gallery"),
            ),
        ]
    report_id = image_sentence_embedding_net["run_id"]
    path = report_dir(root, report_id) / "report.html"
    write_report(
        path,
        ReportContent(
            title=f"twobranch report — {image_sentence_embedding_net['dataset']}",
            runs=runs,
            retrieval=pd.DataFrame(retrieval_eval["metrics"]),
            localization=None if phrases_skipped else pd.DataFrame(localization_eval["summary"]),
            sections=sections,
        ),
    )
    context.log.info(f"report written to {path}")
    return dg.Output(
        {"path": str(path), "report_id": report_id},
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            **{name: png_bytes_value(data) for name, data in images.items()},
            **({"phrase_section": f"left out: {phrases_skipped}"} if phrases_skipped else {}),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
