"""Pure-PyTorch models of the two-branch networks: branches, networks, losses, samplers."""

from models.branch import Branch
from models.embedding_net import EmbeddingNet
from models.losses import (
    EmbeddingLossConfig,
    embedding_loss,
    logistic_loss,
    pairwise_distance,
    region_phrase_embedding_loss,
)
from models.samplers import Batch, NeighborhoodSampler, PairBatch, PairSampler, TripletSampler
from models.similarity_net import SimilarityNet

__all__ = [
    "Batch",
    "Branch",
    "EmbeddingLossConfig",
    "EmbeddingNet",
    "NeighborhoodSampler",
    "PairBatch",
    "PairSampler",
    "SimilarityNet",
    "TripletSampler",
    "embedding_loss",
    "logistic_loss",
    "pairwise_distance",
    "region_phrase_embedding_loss",
]
