"""The similarity network: two branches, element-wise product, an MLP head giving one logit."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.branch import Branch

# Upper bound on (image, text) pairs pushed through the head at once by the all-pairs scorers;
# with fusion_dim 1024 in float32 this keeps the head's activations near 256 MiB.
DEFAULT_MAX_PAIRS_PER_CHUNK = 65_536


class SimilarityNet(nn.Module):
    """Scores (image, text) pairs: ``head(image_branch(x) * text_branch(t))``.

    ``head`` is ``Linear(embed→fusion) → BatchNorm1d → ReLU → Linear(fusion→1)``. The
    ``score_*`` methods score many pairs while embedding each item once; they agree with
    :meth:`forward` in eval mode (in train mode BatchNorm statistics depend on the batch).
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_dim: int = 1024,
        embed_dim: int = 512,
        fusion_dim: int = 1024,
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
        self.fusion_fc = nn.Linear(embed_dim, fusion_dim)
        self.fusion_bn = nn.BatchNorm1d(fusion_dim, momentum=momentum)
        self.score_fc = nn.Linear(fusion_dim, 1)
        for linear in (self.fusion_fc, self.score_fc):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def embed_image(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.image_branch(image_features)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return self.text_branch(text_features)

    def head(self, fused: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` from fused rows ``(N, embed_dim)``."""
        return self.score_fc(F.relu(self.fusion_bn(self.fusion_fc(fused)))).squeeze(1)

    def score_embeddings(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` for row-aligned embedded pairs."""
        return self.head(image_emb * text_emb)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
        combine: Callable[[torch.Tensor, str], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits ``(N,)`` for row-aligned pairs ``(image_features[i], text_features[i])``.

        With ``image_index`` and ``text_index`` the features hold each item once and pair
        ``i`` is ``(image_index[i], text_index[i])``: an item in many pairs is embedded once
        (its BatchNorm statistics then count each item once, not once per pair).
        ``combine(embeddings, "image" | "text")``, in data-parallel training, joins this
        process's share of the items with the other processes' before the pairs are formed.
        """
        image_emb = self.embed_image(image_features)
        text_emb = self.embed_text(text_features)
        if combine is not None:
            image_emb, text_emb = combine(image_emb, "image"), combine(text_emb, "text")
        if image_index is not None:
            image_emb = image_emb[image_index]
        if text_index is not None:
            text_emb = text_emb[text_index]
        return self.score_embeddings(image_emb, text_emb)

    def score_embedding_matrix(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor, chunk: int | None = None
    ) -> torch.Tensor:
        """All-pairs logits from embeddings computed once.

        Each chunk broadcasts ``chunk`` image rows against all texts and runs the head on the
        ``(chunk * n_text, embed_dim)`` products, so memory is bounded by the chunk (under
        ``torch.no_grad()``; with autograd every chunk's activations are kept for backward).
        ``chunk=None`` picks about 65k pairs per chunk.
        """
        n_image, n_text = image_emb.shape[0], text_emb.shape[0]
        rows = _rows_per_chunk(chunk, n_text)
        blocks = []
        for start in range(0, n_image, rows):
            block = image_emb[start : start + rows]
            fused = (block[:, None, :] * text_emb[None, :, :]).reshape(-1, image_emb.shape[1])
            blocks.append(self.head(fused).view(block.shape[0], n_text))
        if not blocks:
            return image_emb.new_zeros((0, n_text))
        return torch.cat(blocks)

    def score_candidates(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        pairs: torch.Tensor,
        chunk: int = DEFAULT_MAX_PAIRS_PER_CHUNK,
    ) -> torch.Tensor:
        """Logits ``(n_pairs,)`` for index pairs ``pairs[:, 0]`` (image row), ``pairs[:, 1]``
        (text row) of precomputed embeddings, e.g. a phrase against its image's regions."""
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape (n, 2), got {tuple(pairs.shape)}")
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        parts = [
            self.score_embeddings(image_emb[part[:, 0]], text_emb[part[:, 1]])
            for part in pairs.split(chunk)
        ]
        return torch.cat(parts) if parts else image_emb.new_zeros((0,))


def _rows_per_chunk(chunk: int | None, n_text: int) -> int:
    if chunk is None:
        return max(1, DEFAULT_MAX_PAIRS_PER_CHUNK // max(n_text, 1))
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    return chunk
