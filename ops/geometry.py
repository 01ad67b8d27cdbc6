"""Box geometry for every stage: IoU of ``x1, y1, x2, y2`` boxes (0-based, exclusive x2/y2).

An empty union (two empty boxes) counts as no overlap, IoU 0, everywhere in the project.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou


def pairwise_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU matrix of shape ``(len(first), len(second))`` in float64; 0 where the union is empty."""
    a = torch.from_numpy(np.asarray(first, dtype=np.float64).reshape(-1, 4))
    b = torch.from_numpy(np.asarray(second, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(box_iou(a, b), nan=0.0).numpy()


def matched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching boxes, broadcast over leading dimensions ``(..., 4)``, on their device.

    torchvision only offers the all-pairs matrix; pairs that are already matched (a phrase with
    each of its own candidates) would waste the whole off-diagonal of it.
    """
    inter_w = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    inter_h = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    inter = inter_w.clamp_min(0) * inter_h.clamp_min(0)
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
