"""Batch plans: which global batches an epoch visits, for each task and network.

The sampler is seeded by (seed, epoch), so every rank of a distributed run, and a resumed
run, draws the same batches; phrase pairs of the similarity network come from a generator
seeded by (seed, epoch, 1) for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.samplers import NeighborhoodSampler, PairSampler, TripletSampler
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData, SplitData
from ops.training.phrase_batches import PhraseBatchSampler, sample_phrase_pairs


@dataclass(frozen=True)
class StepBatch:
    """Rows of one global batch. ``image_rows`` index the image-side features (images or
    regions), ``text_rows`` the text side; ``paired`` rows are aligned (similarity network).
    """

    image_rows: np.ndarray
    text_rows: np.ndarray
    paired: bool
    text_image: np.ndarray | None = None
    text_neighbors: np.ndarray | None = None
    labels: np.ndarray | None = None
    positive: np.ndarray | None = None
    negative: np.ndarray | None = None
    text_chain: np.ndarray | None = None


class BatchPlan:
    """The global batches of an epoch for the configured task and network."""

    def __init__(self, config: TrainConfig, data: SplitData) -> None:
        self.config = config
        self.epoch = 0
        seed = config.seed
        if isinstance(data, ImageSentenceData):
            if config.network == "similarity":
                self.sampler: Any = PairSampler(
                    data.caption_image,
                    config.similarity_batch,
                    config.negatives_per_positive,
                    seed,
                    negative_side=config.negative_side,
                )
            elif config.sampler == "neighborhood":
                self.sampler = NeighborhoodSampler(
                    data.caption_image,
                    config.batch_images,
                    config.sentences_per_image,
                    seed,
                    extra_neighbors=_knn_neighborhoods(config, data),
                )
            else:
                self.sampler = TripletSampler(data.caption_image, config.batch_images, seed)
        else:
            if config.lambda_phrase_neighbor > 0 and not data.phrase_chain.size:
                raise ValueError(
                    "lambda_phrase_neighbor > 0 needs each phrase's entity chain "
                    "(chain_id of the phrase table)"
                )
            if not data.positive_phrase.size:
                raise ValueError(
                    "the phrase training data has no positive (phrase, region) pair: the "
                    "neighborhood graph's phrase_region edges give them"
                )
            self.sampler = PhraseBatchSampler(
                data,
                config.phrases_per_batch,
                config.negative_iou,
                config.cross_image_negatives,
                seed,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        steps = len(self.sampler)
        cap = self.config.max_train_steps_per_epoch
        return steps if cap is None else min(steps, cap)

    def __iter__(self) -> Iterator[StepBatch]:
        config = self.config
        pair_rng = np.random.default_rng([config.seed, self.epoch, 1])
        for step, batch in enumerate(self.sampler):
            if step >= len(self):
                return
            if config.task == "image_sentence" and config.network == "embedding":
                yield StepBatch(
                    batch.image_idx,
                    batch.caption_idx,
                    False,
                    text_image=batch.caption_to_batch_image,
                    text_neighbors=batch.extra_neighbors,
                )
            elif config.task == "image_sentence":
                yield StepBatch(batch.image_idx, batch.caption_idx, True, labels=batch.labels)
            elif config.network == "embedding":
                yield StepBatch(
                    batch.region_idx,
                    batch.phrase_idx,
                    False,
                    positive=batch.positive,
                    negative=batch.negative,
                    text_chain=batch.phrase_chain,
                )
            else:
                regions, phrases, labels = sample_phrase_pairs(
                    batch, config.negatives_per_positive, pair_rng, config.negative_side
                )
                yield StepBatch(regions, phrases, True, labels=labels)


def _knn_neighborhoods(
    config: TrainConfig, data: ImageSentenceData
) -> tuple[np.ndarray, np.ndarray] | None:
    if not config.knn_sentence_neighbors:
        return None
    if not data.has_knn:
        raise ValueError(
            "knn_sentence_neighbors needs the graph's kNN sentence edges: materialize "
            "neighborhood_graph with knn_k > 0"
        )
    return data.knn_start, data.knn_rows


__all__ = ["BatchPlan", "StepBatch"]
