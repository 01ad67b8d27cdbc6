"""The loss step: forward pass of this rank's shard (under autocast when ``amp``), the loss
of the gathered global batch, and one optimizer step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.losses import embedding_loss, logistic_loss, region_phrase_embedding_loss
from ops.device import autocast_context
from ops.training import distributed as dist_utils
from ops.training.batch_plans import StepBatch
from ops.training.config import TrainConfig
from ops.training.placement import DeviceFeatures


def has_rows_for_batch_norm(batch: StepBatch) -> bool:
    """Whether ``batch`` can take a step; the loop skips those that cannot."""
    # BatchNorm in training mode needs at least two rows per branch.
    return batch.image_rows.size >= 2 and batch.text_rows.size >= 2


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: DeviceFeatures,
    batch: StepBatch,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step on the global ``batch``; returns its loss and the loss's terms."""
    loss, terms = _loss(model, features, batch, config, context, device)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, terms


def _has_repeated_items(batch: StepBatch) -> bool:
    # Unique embedding needs two or more items per branch (BatchNorm in training mode).
    images, texts = np.unique(batch.image_rows), np.unique(batch.text_rows)
    return (
        images.size >= 2
        and texts.size >= 2
        and (images.size < batch.image_rows.size or texts.size < batch.text_rows.size)
    )


def _similarity_loss_on_unique_items(
    model: nn.Module,
    features: DeviceFeatures,
    batch: StepBatch,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logistic loss with every image (region) and sentence (phrase) of the batch embedded
    once, however many pairs it is in.

    Ranks split the batch's items, embed their share and gather everyone's embeddings (so
    normalization sees each item once, as one process would); then each rank scores its
    share of the pairs and the logits are gathered for the loss.
    """
    unique_images, image_of_pair = np.unique(batch.image_rows, return_inverse=True)
    unique_texts, text_of_pair = np.unique(batch.text_rows, return_inverse=True)
    bounds = {
        "image": dist_utils.shard_bounds(unique_images.size, context.world_size),
        "text": dist_utils.shard_bounds(unique_texts.size, context.world_size),
        "pair": dist_utils.shard_bounds(batch.image_rows.size, context.world_size),
    }
    image_lo, image_hi = bounds["image"][context.rank]
    text_lo, text_hi = bounds["text"][context.rank]
    pair_lo, pair_hi = bounds["pair"][context.rank]

    def combine(embeddings: torch.Tensor, side: str) -> torch.Tensor:
        return dist_utils.gather_rows(embeddings, bounds[side])

    image_rows = torch.from_numpy(unique_images[image_lo:image_hi]).to(device)
    text_rows = torch.from_numpy(unique_texts[text_lo:text_hi]).to(device)
    with autocast_context(device, config.amp):
        output = model(
            features.image_features[image_rows],
            features.text_features[text_rows],
            image_index=torch.from_numpy(image_of_pair[pair_lo:pair_hi]).to(device),
            text_index=torch.from_numpy(text_of_pair[pair_lo:pair_hi]).to(device),
            combine=combine,
        )
    logits = dist_utils.gather_rows(output.float(), bounds["pair"])
    assert batch.labels is not None
    loss = logistic_loss(logits, torch.from_numpy(batch.labels).to(device))
    return loss, {"logistic": loss}


def _loss(
    model: nn.Module,
    features: DeviceFeatures,
    batch: StepBatch,
    config: TrainConfig,
    context: dist_utils.DistContext,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the global batch and its named terms: this rank embeds its shard of the
    rows, and the gathered embeddings (or logits) give every rank the same loss."""
    if config.network == "similarity" and _has_repeated_items(batch):
        return _similarity_loss_on_unique_items(model, features, batch, config, context, device)
    image_bounds = dist_utils.shard_bounds(batch.image_rows.size, context.world_size)
    text_bounds = dist_utils.shard_bounds(batch.text_rows.size, context.world_size)
    image_lo, image_hi = image_bounds[context.rank]
    text_lo, text_hi = text_bounds[context.rank]
    image_rows = torch.from_numpy(batch.image_rows[image_lo:image_hi]).to(device)
    text_rows = torch.from_numpy(batch.text_rows[text_lo:text_hi]).to(device)
    with autocast_context(device, config.amp):
        output = model(features.image_features[image_rows], features.text_features[text_rows])

    if config.network == "similarity":
        logits = dist_utils.gather_rows(output.float(), image_bounds)
        assert batch.labels is not None
        loss = logistic_loss(logits, torch.from_numpy(batch.labels).to(device))
        return loss, {"logistic": loss}

    image_emb = dist_utils.gather_rows(output[0].float(), image_bounds)
    text_emb = dist_utils.gather_rows(output[1].float(), text_bounds)
    if config.task == "image_sentence":
        assert batch.text_image is not None
        text_image = torch.from_numpy(batch.text_image).to(device)
        extra = None
        if batch.text_neighbors is not None:
            extra = torch.from_numpy(batch.text_neighbors).to(device)
        return embedding_loss(
            image_emb, text_emb, text_image, config.loss_config(), extra_neighbors=extra
        )
    assert batch.positive is not None and batch.negative is not None
    chain = None if batch.text_chain is None else torch.from_numpy(batch.text_chain).to(device)
    return region_phrase_embedding_loss(
        image_emb,
        text_emb,
        torch.from_numpy(batch.positive).to(device),
        torch.from_numpy(batch.negative).to(device),
        config.loss_config(),
        phrase_chain=chain,
    )
