"""The embedding network: two branches into one space, compared by Euclidean distance."""

from __future__ import annotations

import torch
from torch import nn

from models.branch import Branch


class EmbeddingNet(nn.Module):
    """Image and text branches (weights not shared) producing unit vectors of ``embed_dim``."""

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_dim: int = 2048,
        embed_dim: int = 512,
        dropout: float = 0.5,
        batch_norm_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        momentum = batch_norm_momentum
        self.image_branch = Branch(
            image_dim, hidden_dim, embed_dim, dropout, batch_norm_momentum=momentum
        )
        self.text_branch = Branch(
            text_dim, hidden_dim, embed_dim, dropout, batch_norm_momentum=momentum
        )

    def embed_image(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.image_branch(image_features)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return self.text_branch(text_features)

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(image_features), self.embed_text(text_features)
