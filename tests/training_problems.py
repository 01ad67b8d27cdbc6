"""Small synthetic training problems (image–sentence and phrase–region) and the tiny network
sizes they train with, shared by the trainer, resume, distributed and feature-file tests."""

from __future__ import annotations

import numpy as np

from ops.geometry import pairwise_iou
from ops.graph.build import positive_regions
from ops.training.data import ImageSentenceData, PhraseRegionData

SMALL = {
    "hidden_dim": 32,
    "embed_dim": 16,
    "fusion_dim": 32,
    "batch_images": 50,
    "similarity_batch": 50,
    "phrases_per_batch": 36,
    "margin": 0.2,
    "lr": 1e-2,
    "dropout": 0.1,
    "device": "cpu",
}


def make_image_sentence(
    n_images: int, seed: int, image_dim: int = 64, text_dim: int = 48, noise: float = 0.5
) -> ImageSentenceData:
    """Five captions per image; a caption is a fixed linear map of its image plus noise."""
    mapping = np.random.default_rng(1234).normal(size=(image_dim, text_dim)) / np.sqrt(image_dim)
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n_images, image_dim)).astype(np.float32)
    caption_image = np.repeat(np.arange(n_images), 5)
    texts = images[caption_image] @ mapping + noise * rng.normal(
        size=(caption_image.size, text_dim)
    )
    return ImageSentenceData(images, texts.astype(np.float32), caption_image)


def make_phrase_region(
    n_images: int,
    seed: int,
    region_dim: int = 64,
    text_dim: int = 48,
    noise: float = 0.3,
    positive_iou: float = 0.6,
) -> PhraseRegionData:
    """Three objects of distinct classes per image, two phrases per object (one entity
    chain per object). Candidates: the
    three ground-truth boxes, two jittered copies of each, ten random boxes; a region's
    feature mixes the class vectors of the objects it overlaps (weighted by IoU). Positive
    pairs are the graph's rule: the same image, IoU ≥ ``positive_iou``."""
    fixed = np.random.default_rng(99)
    classes = fixed.normal(size=(8, 32))
    to_region = fixed.normal(size=(32, region_dim)) / np.sqrt(32)
    to_text = fixed.normal(size=(32, text_dim)) / np.sqrt(32)
    rng = np.random.default_rng(seed)
    regions: dict[str, list[np.ndarray]] = {"features": [], "image": [], "boxes": [], "gt": []}
    phrases: dict[str, list[np.ndarray]] = {"features": [], "image": [], "boxes": []}
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for image in range(n_images):
        kinds = rng.choice(8, 3, replace=False)
        corner = rng.uniform(0, 60, size=(3, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(20, 40, size=(3, 2))], 1)
        jittered = np.repeat(boxes, 2, 0) + rng.uniform(-3, 3, size=(6, 4))
        corner = rng.uniform(0, 70, size=(10, 2))
        random = np.concatenate([corner, corner + rng.uniform(10, 40, size=(10, 2))], 1)
        candidates = np.concatenate([boxes, jittered, random])
        content = pairwise_iou(candidates, boxes) @ classes[kinds]
        regions["features"].append(
            content @ to_region + noise * rng.normal(size=(len(candidates), region_dim))
        )
        regions["image"].append(np.full(len(candidates), image))
        regions["boxes"].append(candidates)
        regions["gt"].append(np.arange(len(candidates)) < 3)
        for obj in np.repeat(np.arange(3), 2):
            phrases["features"].append(
                (classes[kinds[obj]] @ to_text + noise * rng.normal(size=text_dim))[None]
            )
            phrases["image"].append(np.array([image]))
            phrases["boxes"].append(boxes[obj][None])
        rows, cols, _ = positive_regions(np.repeat(boxes, 2, 0), candidates, positive_iou)
        pairs.append((image * 6 + rows, image * len(candidates) + cols))
    return PhraseRegionData(
        region_features=np.concatenate(regions["features"]),
        region_image=np.concatenate(regions["image"]),
        region_boxes=np.concatenate(regions["boxes"]),
        phrase_features=np.concatenate(phrases["features"]),
        phrase_image=np.concatenate(phrases["image"]),
        phrase_boxes=np.concatenate(phrases["boxes"]),
        region_is_gt=np.concatenate(regions["gt"]),
        positive_phrase=np.concatenate([p for p, _ in pairs]),
        positive_region=np.concatenate([r for _, r in pairs]),
        phrase_chain=np.repeat(np.arange(3 * n_images), 2),
    )
