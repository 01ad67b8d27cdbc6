"""Feature files → per-split training/evaluation arrays, with the ids to map results back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ops.features.feature_cache import feature_matrix, feature_rows
from ops.features.region_table import (
    STRINGS,
    ImageCodes,
    RegionTable,
    positions,
    region_table,
    strings,
)
from ops.metrics.localization_rule import GROUND_TRUTH_COLUMNS, evaluable_phrases
from ops.storage.parquet_io import iter_batches
from ops.training.data import ImageSentenceData, PhraseRegionData

GT_COLUMNS = list(GROUND_TRUTH_COLUMNS)


def is_member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin`` by hashing: on string ids numpy compares objects pairwise, which took minutes
    for 400,000 region rows against 1,000 image ids."""
    return pd.Index(values).isin(of)


@dataclass(frozen=True)
class ImageSentenceSplit:
    data: ImageSentenceData
    image_ids: np.ndarray
    caption_ids: np.ndarray


@dataclass(frozen=True)
class PhraseRegionSplit:
    data: PhraseRegionData
    image_ids: np.ndarray
    region_ids: np.ndarray
    phrase_ids: np.ndarray
    phrase_types: np.ndarray


def image_sentence_splits(
    image_path: str | Path,
    text_path: str | Path,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, ImageSentenceSplit]:
    """Per split: image features, caption features, and each caption's image row."""
    # Both matrices stay in their cache files: a split is a list of rows, read per batch.
    image_ids, image_matrix = feature_rows(image_path)
    text_ids, text_matrix = feature_rows(text_path)
    result: dict[str, ImageSentenceSplit] = {}
    for split in splits:
        image_rows = np.flatnonzero(image_ids["split"].to_numpy() == split)
        caption_rows = np.flatnonzero(text_ids["split"].to_numpy() == split)
        if not len(image_rows) or not len(caption_rows):
            continue
        split_image_ids = image_ids["image_id"].to_numpy()[image_rows]
        position = pd.Series(np.arange(len(image_rows)), index=split_image_ids)
        caption_images = text_ids["image_id"].to_numpy()[caption_rows]
        known = is_member(caption_images, split_image_ids)
        caption_rows, caption_images = caption_rows[known], caption_images[known]
        # Captions grouped by image keep the evaluation's "5 per image" layout readable.
        caption_image = position.loc[caption_images].to_numpy()
        order = np.argsort(caption_image, kind="stable")
        result[split] = ImageSentenceSplit(
            data=ImageSentenceData(
                image_features=image_matrix[image_rows],
                text_features=text_matrix[caption_rows[order]],
                caption_image=caption_image[order],
            ),
            image_ids=split_image_ids,
            caption_ids=text_ids["caption_id"].to_numpy()[caption_rows[order]],
        )
    return result


def region_feature_ids(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the region feature file's image ids, sorted; each row's code into them; each row's
    region id as ``StringDType``), read batch by batch: no Python object per region row."""
    codes = ImageCodes()
    images, region_ids = [], []
    for batch in iter_batches(path, columns=["image_id", "region_id"]):
        images.append(codes.encode(batch.column("image_id").cast(pa.string())))
        region_ids.append(strings(batch.column("region_id").cast(pa.string())))
    image = np.concatenate(images) if images else np.zeros(0, dtype=np.int32)
    image_ids, (image,) = codes.sorted(image)
    ids = np.concatenate(region_ids) if region_ids else np.zeros(0, dtype=STRINGS)
    return image_ids, image, ids


def phrase_region_splits(
    region_path: str | Path,
    proposals: str | Path | pd.DataFrame | RegionTable,
    phrase_path: str | Path,
    phrases: pd.DataFrame,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, PhraseRegionSplit]:
    """Per split: region features with boxes, and the visual phrases with a ground-truth box.
    ``proposals`` is the proposals file (or its table), which gives each region its box.

    Ground-truth regions are only kept in the training split (they are candidates for
    training only)."""
    regions = region_table(proposals)
    feature_images, region_image, region_ids = region_feature_ids(region_path)
    region_matrix = feature_matrix(region_path, len(region_ids))
    proposal_row = positions(regions.region_ids, region_ids)
    if (proposal_row < 0).any():
        missing = region_ids[int(np.flatnonzero(proposal_row < 0)[0])]
        raise ValueError(f"{region_path}: region {missing} is not in the proposals file")
    is_gt = regions.is_gt[proposal_row]
    phrase_ids, phrase_matrix = feature_rows(phrase_path)
    phrase_info = phrases.set_index("phrase_id")[["split", "phrase_type", *GT_COLUMNS]]
    phrase_info = phrase_info.loc[phrase_ids["phrase_id"].to_numpy()]
    phrase_chain = _chain_numbers(phrases, phrase_ids)
    visual = evaluable_phrases(phrase_info, every_listed_type=False)
    result: dict[str, PhraseRegionSplit] = {}
    for split in splits:
        phrase_rows = np.flatnonzero(visual & (phrase_info["split"].to_numpy() == split))
        split_images = np.unique(phrase_ids["image_id"].to_numpy()[phrase_rows])
        in_split = np.zeros(len(feature_images), dtype=bool)
        found = positions(feature_images, split_images)
        in_split[found[found >= 0]] = True
        keep_region = in_split[region_image]
        if split != "train":
            keep_region &= ~is_gt
        region_rows = np.flatnonzero(keep_region)
        # Codes follow the ids' sorted order, so these are the images np.unique would give.
        present = np.unique(region_image[region_rows])
        images_with_regions = feature_images[present]
        phrase_rows = phrase_rows[
            is_member(phrase_ids["image_id"].to_numpy()[phrase_rows], images_with_regions)
        ]
        if not len(phrase_rows):
            continue
        image_position = np.full(len(feature_images), -1, dtype=np.int64)
        image_position[present] = np.arange(len(present))
        position = pd.Series(np.arange(len(images_with_regions)), index=images_with_regions)
        result[split] = PhraseRegionSplit(
            data=PhraseRegionData(
                region_features=region_matrix[region_rows],
                region_image=image_position[region_image[region_rows]],
                region_boxes=regions.boxes[proposal_row[region_rows]],
                phrase_features=phrase_matrix[phrase_rows],
                phrase_image=position.loc[
                    phrase_ids["image_id"].to_numpy()[phrase_rows]
                ].to_numpy(),
                phrase_boxes=phrase_info[GT_COLUMNS].to_numpy(np.float64)[phrase_rows],
                region_is_gt=is_gt[region_rows],
                phrase_chain=phrase_chain[phrase_rows] if phrase_chain.size else phrase_chain,
            ),
            image_ids=images_with_regions,
            region_ids=region_ids[region_rows],
            phrase_ids=phrase_ids["phrase_id"].to_numpy()[phrase_rows],
            phrase_types=phrase_info["phrase_type"].to_numpy()[phrase_rows],
        )
    return result


def _chain_numbers(phrases: pd.DataFrame, phrase_ids: pd.DataFrame) -> np.ndarray:
    """Each feature row's entity chain as a number, one per (image, chain_id): a chain id
    names an entity within its image only. Empty when the table has no chains."""
    if "chain_id" not in phrases.columns:
        return np.zeros(0, dtype=np.int64)
    chain_of = phrases.set_index("phrase_id")["chain_id"].astype(str)
    chains = chain_of.loc[phrase_ids["phrase_id"].to_numpy()].to_numpy()
    keys = pd.MultiIndex.from_arrays([phrase_ids["image_id"].astype(str).to_numpy(), chains])
    return pd.factorize(keys)[0].astype(np.int64)


def first_images(
    split: ImageSentenceSplit | PhraseRegionSplit, n_images: int
) -> ImageSentenceSplit | PhraseRegionSplit:
    """The first ``n_images`` images of a split with their captions, or with their regions and
    phrases (cheaper validation)."""
    if n_images <= 0 or n_images >= len(split.image_ids):
        return split
    if isinstance(split, PhraseRegionSplit):
        return _first_phrase_images(split, n_images)
    keep = split.data.caption_image < n_images
    return ImageSentenceSplit(
        data=ImageSentenceData(
            image_features=split.data.image_features[:n_images],
            text_features=split.data.text_features[keep],
            caption_image=split.data.caption_image[keep],
        ),
        image_ids=split.image_ids[:n_images],
        caption_ids=split.caption_ids[keep],
    )


def _first_phrase_images(split: PhraseRegionSplit, n_images: int) -> PhraseRegionSplit:
    data = split.data
    regions = data.region_image < n_images
    phrases = data.phrase_image < n_images
    return PhraseRegionSplit(
        data=PhraseRegionData(
            region_features=data.region_features[regions],
            region_image=data.region_image[regions],
            region_boxes=data.region_boxes[regions],
            phrase_features=data.phrase_features[phrases],
            phrase_image=data.phrase_image[phrases],
            phrase_boxes=data.phrase_boxes[phrases],
            region_is_gt=data.region_is_gt[regions],
            phrase_chain=data.phrase_chain[phrases]
            if data.phrase_chain.size
            else data.phrase_chain,
        ),
        image_ids=split.image_ids[:n_images],
        region_ids=split.region_ids[regions],
        phrase_ids=split.phrase_ids[phrases],
        phrase_types=split.phrase_types[phrases],
    )
