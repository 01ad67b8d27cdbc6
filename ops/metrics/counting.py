"""Counting True entries of large boolean blocks fast and in the block's own memory."""

from __future__ import annotations

import torch


def count_true(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """True entries of a 2-D mask along ``dim``, as int64.

    Summing a bool tensor first copies all of it to int64 (8 bytes per score); summing its
    bytes in uint8 over groups of at most 255 cannot overflow and needs no copy, which is
    several times faster and keeps memory at the block's own size.
    """
    group = 255
    as_bytes = mask.view(torch.uint8)
    length = as_bytes.shape[dim]
    whole = (length // group) * group
    count = torch.zeros(as_bytes.shape[1 - dim], dtype=torch.int64, device=mask.device)
    if whole:
        grouped = as_bytes.narrow(dim, 0, whole).unflatten(dim, (-1, group))
        count += grouped.sum(dim + 1, dtype=torch.uint8).sum(dim)
    if whole < length:
        count += as_bytes.narrow(dim, whole, length - whole).sum(dim, dtype=torch.uint8)
    return count
