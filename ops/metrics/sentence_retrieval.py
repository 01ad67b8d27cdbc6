"""Sentence-to-sentence retrieval (``t2t``): a caption retrieves the other captions of its image.

The authors' code reports it because it shows what the sentence neighborhood constraint does
to the text side of the embedding. The query itself is left out of the candidates; its
first-positive rank counts the candidates of other images that score strictly above its best
positive, plus those that tie with it at a smaller index (the rank a stable descending sort
gives, as for image-sentence ranks). Queries are scored in blocks of rows, so memory holds one
``(block, n_captions)`` slice at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ops.metrics.retrieval_protocols import protocol_folds, recall_summary
from ops.metrics.score_sources import CPU_BLOCK_ELEMENTS, CUDA_BLOCK_ELEMENTS

DIRECTION = "t2t"


@torch.no_grad()
def sentence_ranks(
    text_emb: torch.Tensor, caption_image: np.ndarray, chunk: int | None = None
) -> np.ndarray:
    """1-based first-positive rank of every caption among the others; 0 for a caption whose
    image has no other caption (it has nothing to retrieve)."""
    n = int(text_emb.shape[0])
    device = text_emb.device
    image = torch.as_tensor(np.asarray(caption_image), device=device)
    index = torch.arange(n, device=device)
    target = CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS
    step = chunk or max(1, target // max(1, n))
    ranks = np.zeros(n, dtype=np.int64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        scores = text_emb[start:stop] @ text_emb.T
        same = image[start:stop, None] == image[None, :]
        positive = same.clone()
        positive[torch.arange(stop - start, device=device), index[start:stop]] = False
        best = scores.masked_fill(~positive, float("-inf")).max(dim=1).values
        at_best = positive & (scores == best[:, None])
        best_index = torch.where(at_best, index[None, :], n).min(dim=1).values
        negative = ~same
        above = (negative & (scores > best[:, None])).sum(dim=1)
        tied_before = (
            negative & (scores == best[:, None]) & (index[None, :] < best_index[:, None])
        ).sum(dim=1)
        rank = 1 + above + tied_before
        rank[~positive.any(dim=1)] = 0
        ranks[start:stop] = rank.cpu().numpy()
    return ranks


def _row(protocol: str, fold: int, ranks: np.ndarray) -> dict[str, object]:
    summary = recall_summary(ranks)
    return {
        "protocol": protocol,
        "fold": fold,
        "direction": DIRECTION,
        **summary,
        "rsum": summary["r1"] + summary["r5"] + summary["r10"],
        "r_precision": float("nan"),
        "map_at_r": float("nan"),
    }


def evaluate_sentence_protocol(
    text_emb: torch.Tensor,
    caption_image: np.ndarray,
    n_images: int,
    protocol: str,
    fold_size: int = 1000,
) -> list[dict[str, object]]:
    """``t2t`` metric rows of ``protocol``: each fold's captions retrieve among themselves;
    ``5fold_1k`` adds the folds' mean as fold -1, as for the other directions."""
    mapping = np.asarray(caption_image)
    rows = []
    for fold, (first, last) in enumerate(protocol_folds(protocol, n_images, fold_size)):
        captions = np.flatnonzero((mapping >= first) & (mapping < last))
        ranks = sentence_ranks(text_emb[torch.from_numpy(captions)], mapping[captions])
        rows.append(_row(protocol, fold, ranks[ranks > 0]))
    if protocol == "5fold_1k":
        numeric = ["r1", "r5", "r10", "median_rank", "mean_rank", "rsum"]
        means = pd.DataFrame(rows)[numeric].mean()
        rows.append(
            {"protocol": protocol, "fold": -1, "direction": DIRECTION}
            | {name: float(means[name]) for name in numeric}
            | {"r_precision": float("nan"), "map_at_r": float("nan")}
        )
    return rows
