"""The one door to a two-branch network: :func:`build_model` makes a fresh one from a training
config, :func:`load_two_branch` a trained one from its checkpoint, with the text encoder of the
features it was trained on when asked. Evaluation, the report and search all load through it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from models.embedding_net import EmbeddingNet
from models.similarity_net import SimilarityNet
from ops.device import resolve_device
from ops.training.checkpoint import CheckpointError, config_of, load_checkpoint
from ops.training.config import TrainConfig
from ops.training.validate import embed_rows

if TYPE_CHECKING:  # scikit-learn loads only for a caller that asks for the text encoder
    from ops.features.text.text_features import TextEncoders

EMBED_CHUNK = 1024  # feature rows per forward pass


def build_model(config: TrainConfig, image_dim: int, text_dim: int) -> nn.Module:
    """The network named by ``config`` (for the phrase task the image side takes regions)."""
    if config.network == "embedding":
        return EmbeddingNet(
            image_dim,
            text_dim,
            config.hidden_dim,
            config.embed_dim,
            config.dropout,
            batch_norm_momentum=config.batch_norm_momentum,
        )
    return SimilarityNet(
        image_dim,
        text_dim,
        config.hidden_dim,
        config.embed_dim,
        config.fusion_dim,
        config.dropout,
        batch_norm_momentum=config.batch_norm_momentum,
    )


@dataclass(frozen=True)
class TrainedTwoBranch:
    """A trained network in eval mode on ``device``, with what it was trained with."""

    checkpoint: Path
    network: nn.Module  # EmbeddingNet or SimilarityNet
    config: TrainConfig
    device: torch.device
    image_dim: int  # feature dimensions it takes
    text_dim: int
    # The fitted text encoder of its text features (text → feature row); None unless asked.
    text_encoders: TextEncoders | None = None

    def check_feature_dims(self, image_dim: int, text_dim: int) -> None:
        """Refuse features of other dimensions than the network was trained on."""
        if (self.image_dim, self.text_dim) != (image_dim, text_dim):
            raise ValueError(
                f"{self.checkpoint}: the network takes image/text features of dimension "
                f"{self.image_dim}/{self.text_dim}, but the features given have "
                f"{image_dim}/{text_dim}; evaluate with the feature files it was trained on"
            )

    def embed_images(self, features: np.ndarray) -> np.ndarray:
        """Image (or region) feature rows as embeddings (float32, unit rows for the
        embedding network)."""
        return self._embed(self.network.embed_image, features)

    def embed_texts(self, features: np.ndarray) -> np.ndarray:
        """Text feature rows as embeddings."""
        return self._embed(self.network.embed_text, features)

    def _embed(self, branch: nn.Module, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        if not features.flags.writeable:  # a zero-copy view of Arrow memory
            features = features.copy()
        rows = torch.from_numpy(features).to(self.device)
        return embed_rows(branch, rows, EMBED_CHUNK, self.config.amp).cpu().numpy()


def load_two_branch(
    checkpoint: str | Path,
    device: torch.device | str | None = None,
    text_encoder: str | Path | None = None,
) -> TrainedTwoBranch:
    """The trained network of ``checkpoint`` on ``device`` (None: ``auto``), and the text
    encoder saved at ``text_encoder`` when given. A checkpoint that is not one, or whose
    weights do not fit the network it names, is a CheckpointError naming the file."""
    checkpoint = Path(checkpoint)
    if not isinstance(device, torch.device):
        device = resolve_device(device or "auto")
    payload = load_checkpoint(checkpoint, device)
    config = config_of(payload, checkpoint)
    dims = payload["model_dims"]
    image_dim, text_dim = int(dims["image_dim"]), int(dims["text_dim"])
    network = build_model(config, image_dim, text_dim)
    try:
        network.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{checkpoint}: weights do not fit the network: {error}") from error
    encoders = None
    if text_encoder is not None:
        from ops.features.text.encoder_store import load_text_encoders

        encoders = load_text_encoders(text_encoder)
    return TrainedTwoBranch(
        checkpoint=checkpoint,
        network=network.to(device).eval(),
        config=config,
        device=device,
        image_dim=image_dim,
        text_dim=text_dim,
        text_encoders=encoders,
    )
