"""Dataset loaders: every way data enters the pipeline, each returning DatasetTables."""

from ops.datasets.coco import load_coco_captions
from ops.datasets.custom import load_custom
from ops.datasets.flickr30k_entities import (
    load_entities_image_sizes,
    load_entities_phrases,
    parse_annotation_file,
    parse_sentence_file,
)
from ops.datasets.image_check import validate_images
from ops.datasets.karpathy import load_karpathy

__all__ = [
    "load_coco_captions",
    "load_custom",
    "load_entities_image_sizes",
    "load_entities_phrases",
    "load_karpathy",
    "parse_annotation_file",
    "parse_sentence_file",
    "validate_images",
]
