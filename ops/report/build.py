"""What the report shows, gathered from the runs, the result tables and the test split: the
runs table, the plots and the galleries, written as ``reports/<run_id>/report.html``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ops.data.dataset_store import load_dataset_table
from ops.evaluation.single_stage import split_embeddings
from ops.handoffs import LocalizationEvalSummary, RetrievalEvalSummary, TrainedModel
from ops.report.html import ReportContent, img_tag, two_stage_section, write_report
from ops.report.plots import (
    grounding_gallery,
    per_type_bars,
    recall_curves,
    retrieval_gallery,
    training_curves,
)
from ops.report.settings import ReportSettings
from ops.storage.parquet_io import read_table
from ops.storage.paths import report_dir
from ops.storage.results_store import read_result
from ops.training.inputs import image_sentence_splits
from ops.training.trained_model import load_two_branch


@dataclass(frozen=True)
class BuiltReport:
    path: Path
    report_id: str
    # Name → PNG: training_curves, recall_at_k, per_type, retrieval_gallery, grounding_gallery.
    plots: dict[str, bytes] = field(repr=False)


def runs_table(trained: Sequence[TrainedModel]) -> pd.DataFrame:
    """One row per trained model: what it is, its best score, whether it leads."""
    return pd.DataFrame(
        [
            {
                "task": run.task,
                "network": run.network,
                "run_id": run.run_id,
                "device": run.device,
                "processes": run.world_size,
                "best_epoch": run.best_epoch,
                "best validation score": run.best_val_score,
                "validated on": run.validation_scope,
                "champion": "yes" if run.champion else "no",
                "why": run.champion_reason,
            }
            for run in trained
        ]
    )


def epoch_curves(root: Path, trained: Sequence[TrainedModel]) -> dict[str, pd.DataFrame]:
    """``epoch_metrics`` of each run in epoch order, keyed "<task> <network>"."""
    return {
        f"{run.task} {run.network}": read_result(root, "epoch_metrics", run.run_id).sort_values(
            "epoch"
        )
        for run in trained
    }


def retrieval_gallery_png(
    run: TrainedModel, n: int, root: Path, device_name: str = "auto"
) -> bytes:
    """``n`` test captions (a fixed random draw) with the embedding run's top-5 images."""
    features = run.features
    split = image_sentence_splits(features["image_features"], features["text_features"], ("test",))[
        "test"
    ]
    image_emb, text_emb = split_embeddings(load_two_branch(run.checkpoint, device_name), split)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(split.caption_ids), size=min(n, len(split.caption_ids)), replace=False)
    with torch.no_grad():
        top = (text_emb[torch.as_tensor(picks)] @ image_emb.T).topk(5, dim=1).indices.cpu()
    captions = load_dataset_table(root, run.dataset, "captions").set_index("caption_id")
    paths = load_dataset_table(root, run.dataset, "images").set_index("image_id")["path"]
    texts, top_paths, truth = [], [], []
    for row, pick in enumerate(picks):
        texts.append(str(captions.loc[split.caption_ids[pick], "text"]))
        ranked = [split.image_ids[i] for i in top[row].tolist()]
        top_paths.append([paths[i] for i in ranked])
        true_image = split.image_ids[split.data.caption_image[pick]]
        truth.append(ranked.index(true_image) if true_image in ranked else None)
    return retrieval_gallery(texts, top_paths, truth)


def grounding_items(run: TrainedModel, n: int, root: Path) -> list[dict]:
    """``n`` of the run's localized test phrases (a fixed random draw): image path, phrase,
    true box and the chosen proposal's box (None when it chose none)."""
    results = read_result(root, "localization_results", run.run_id)
    phrases = load_dataset_table(root, run.dataset, "phrases").set_index("phrase_id")
    proposals = read_table(run.features["region_proposals"]).set_index("region_id")
    paths = load_dataset_table(root, run.dataset, "images").set_index("image_id")["path"]
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
    return items


def build_report(
    root: Path,
    retrieval_runs: Sequence[TrainedModel],
    localization_runs: Sequence[TrainedModel],
    retrieval_eval: RetrievalEvalSummary,
    localization_eval: LocalizationEvalSummary | None,
    settings: ReportSettings,
    *,
    device: str,
) -> BuiltReport:
    """Write the report of the (embedding, similarity) runs of both tasks and their
    evaluations (the outputs of ``RetrievalEvalResult`` / ``LocalizationEvalResult``).
    The galleries use each task's embedding run; the report is filed under the retrieval
    embedding run's id. Without ``localization_eval`` (a dataset without phrase boxes) the
    phrase localization sections are left out."""
    phrases = localization_eval is not None
    trained = [*retrieval_runs, *(localization_runs if phrases else [])]
    embedding = retrieval_runs[0]
    plots = {
        "training_curves": training_curves(epoch_curves(root, trained)),
        "recall_at_k": recall_curves(retrieval_eval.recall_curves),
        "retrieval_gallery": retrieval_gallery_png(
            embedding, settings.gallery_captions, root, device
        ),
    }
    sections = [
        ("Training curves", img_tag(plots["training_curves"], "training curves")),
        ("Recall@K", img_tag(plots["recall_at_k"], "recall at K")),
        (
            "Retrieval gallery (top-5 images per sentence; true image framed)",
            img_tag(plots["retrieval_gallery"], "retrieval gallery"),
        ),
    ]
    if retrieval_eval.two_stage:
        sections.insert(0, ("Two-stage retrieval", two_stage_section(retrieval_eval.two_stage)))
    if localization_eval is not None:
        plots["per_type"] = per_type_bars(pd.DataFrame(localization_eval.per_type))
        plots["grounding_gallery"] = grounding_gallery(
            grounding_items(localization_runs[0], settings.gallery_phrases, root)
        )
        sections += [
            ("Grounding accuracy per phrase type", img_tag(plots["per_type"], "per type")),
            (
                "Grounding gallery (green: ground truth, red: prediction)",
                img_tag(plots["grounding_gallery"], "grounding gallery"),
            ),
        ]
    report_id = embedding.run_id
    path = report_dir(root, report_id) / "report.html"
    write_report(
        path,
        ReportContent(
            title=f"twobranch report — {embedding.dataset}",
            runs=runs_table(trained),
            retrieval=pd.DataFrame(retrieval_eval.metrics),
            localization=(
                pd.DataFrame(localization_eval.summary) if localization_eval is not None else None
            ),
            sections=sections,
        ),
    )
    return BuiltReport(path=path, report_id=report_id, plots=plots)
