"""Training of the two-branch networks: config, data, loop, checkpoints, distributed runs."""

from ops.training.checkpoint import CheckpointError, build_model, load_checkpoint, load_model
from ops.training.config import TrainConfig
from ops.training.data import ImageSentenceData, PhraseRegionData, load_bundle, save_bundle
from ops.training.trainer import EpochRecord, TrainResult, train
from ops.training.validate import PhrasePredictions, predict_phrase_regions

__all__ = [
    "CheckpointError",
    "EpochRecord",
    "ImageSentenceData",
    "PhrasePredictions",
    "PhraseRegionData",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "load_bundle",
    "load_checkpoint",
    "load_model",
    "predict_phrase_regions",
    "save_bundle",
    "train",
]
