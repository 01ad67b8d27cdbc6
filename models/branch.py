"""One branch of a two-branch network: a two-layer MLP that maps features to unit vectors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.branch_arrays import BranchArrays


class Branch(nn.Module):
    """``Linear → BatchNorm1d → ReLU → Dropout → Linear → L2-normalize``.

    Linear weights use Xavier (Glorot) uniform init and zero bias, as in the authors' code.
    ``batch_norm_momentum`` is PyTorch's: ``running = (1 − p)·running + p·batch``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 512,
        dropout: float = 0.5,
        normalize: bool = True,
        batch_norm_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) <= 0:
            raise ValueError(
                f"dimensions must be positive, got in={in_dim} hidden={hidden_dim} out={out_dim}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.normalize = normalize
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim, momentum=batch_norm_momentum)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        for linear in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.relu(self.bn(self.fc1(features))))
        out = self.fc2(hidden)
        return F.normalize(out, dim=1) if self.normalize else out

    def to_arrays(self) -> BranchArrays:
        """The weights as float32 arrays for :meth:`BranchArrays.forward`, which computes this
        branch in evaluation mode without torch."""

        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().to("cpu", torch.float32).numpy().copy()

        bn = self.bn
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("the branch's BatchNorm keeps no running statistics")
        return BranchArrays(
            fc1_weight=array(self.fc1.weight),
            fc1_bias=array(self.fc1.bias),
            bn_mean=array(bn.running_mean),
            bn_var=array(bn.running_var),
            bn_weight=array(bn.weight),
            bn_bias=array(bn.bias),
            bn_eps=np.asarray(bn.eps, dtype=np.float32),
            fc2_weight=array(self.fc2.weight),
            fc2_bias=array(self.fc2.bias),
            normalize=np.asarray(self.normalize),
        )
