"""Data-parallel training under ``torchrun``: process group, batch shards, gathers with
gradient, and batch normalization over the global batch.

Every rank draws the same global batch (samplers are seeded by (seed, epoch)), embeds a
contiguous slice of each of its row sets (images and texts, or pairs), and gathers the
embeddings of all ranks in the original order, so the loss is the single-process loss of the
global batch, replicated on every rank. The gather's backward sums the gradients of all ranks'
(identical) losses, which is ``world_size`` × the gradient of the loss; DDP's mean over ranks
divides that back out, so parameter gradients equal the single-process ones.

Batch normalization must also see the global batch: on CUDA ``torch.nn.SyncBatchNorm``; on
CPU, where SyncBatchNorm refuses to run, :class:`GlobalBatchNorm1d` (statistics combined
across ranks with gloo). Either keeps a distributed run equal to a single-process run up to
float rounding (dropout masks aside, which are drawn per rank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ops.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def current_context() -> DistContext:
    """The process group's view of this process; a single process when none is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def device_for(name: str, context: DistContext) -> torch.device:
    """``name`` resolved; under a multi-GPU launch each rank takes ``cuda:LOCAL_RANK``."""
    device = resolve_device(name)
    if device.type == "cuda" and context.is_distributed and device.index is None:
        device = torch.device("cuda", context.local_rank % max(torch.cuda.device_count(), 1))
    return device


def init_distributed(device_name: str = "auto", backend: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment with ``backend`` (``auto``:
    NCCL on CUDA, gloo on CPU). Without that environment, or when already initialized, only
    reports the context."""
    if not launched_by_torchrun() or dist.is_initialized():
        return current_context()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device_name).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    return current_context()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n_rows: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` slices, sizes differing by at most one (first ranks
    larger), like ``numpy.array_split``."""
    edges = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(n_rows), world_size)])
    return [(int(edges[r]), int(edges[r + 1])) for r in range(world_size)]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather of equal-shaped tensors whose backward returns this rank's slice of the
    sum of every rank's gradient (all-reduce, which every backend supports)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(local: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds ``bounds[r]``) with autograd, in order."""
    if len(bounds) == 1:
        return local
    sizes = [stop - start for start, stop in bounds]
    width = max(sizes)
    padded = local
    if local.shape[0] < width:
        padding = local.new_zeros((width - local.shape[0], *local.shape[1:]))
        padded = torch.cat([local, padding])
    gathered = _AllGatherWithGrad.apply(padded)
    pieces = [gathered[r * width : r * width + size] for r, size in enumerate(sizes)]
    return torch.cat(pieces)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the rows of every rank.

    Per-rank counts, means and centered sums of squares are gathered (with gradient) and
    combined exactly (Chan et al.), so a CPU run under gloo normalizes like one process on
    the global batch. Outside training or without a process group it is plain BatchNorm1d.
    State-dict keys are those of BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size() == 1:
            return super().forward(x)
        count = x.new_full((1, 1), float(x.shape[0]))
        mean = x.mean(0, keepdim=True) if x.shape[0] else x.new_zeros((1, x.shape[1]))
        centered_sq = ((x - mean) ** 2).sum(0, keepdim=True)
        stats = _AllGatherWithGrad.apply(torch.cat([count, mean, centered_sq], 1))
        counts, means, sqs = stats[:, :1], stats[:, 1 : 1 + x.shape[1]], stats[:, 1 + x.shape[1] :]
        total = counts.sum()
        global_mean = (counts * means).sum(0) / total
        m2 = (sqs + counts * (means - global_mean) ** 2).sum(0)
        var = m2 / total
        out = (x - global_mean) / torch.sqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            self._update_running_stats(
                global_mean.detach(), (m2 / (total - 1).clamp_min(1)).detach()
            )
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def convert_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Global-batch BatchNorm for a distributed run: SyncBatchNorm on CUDA, else ours."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _replace_batch_norm(module)


def _replace_batch_norm(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm1d:
        replacement = GlobalBatchNorm1d(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        ).to(next(iter(module.state_dict().values()), torch.zeros(())).device)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, _replace_batch_norm(child))
    return module


def broadcast_object(value: Any, context: DistContext) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not context.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: Any, context: DistContext) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not context.is_distributed:
        return [value]
    holder: list[Any] = [None] * context.world_size
    dist.all_gather_object(holder, value)
    return holder


def barrier(context: DistContext) -> None:
    if context.is_distributed:
        dist.barrier()
