"""Validation subsets: the first N images of a split keep exactly their own rows."""

from __future__ import annotations

import numpy as np

from ops.training.data import PhraseRegionData
from ops.training.inputs import PhraseRegionSplit, first_images, is_member


def _phrase_split(n_images: int, regions_per_image: int, phrases_per_image: int):
    rng = np.random.default_rng(0)
    region_image = np.repeat(np.arange(n_images), regions_per_image)
    phrase_image = np.repeat(np.arange(n_images), phrases_per_image)
    boxes = np.tile([0.0, 0.0, 10.0, 10.0], (region_image.size, 1))
    data = PhraseRegionData(
        region_features=rng.standard_normal((region_image.size, 4)).astype(np.float32),
        region_image=region_image,
        region_boxes=boxes,
        phrase_features=rng.standard_normal((phrase_image.size, 3)).astype(np.float32),
        phrase_image=phrase_image,
        phrase_boxes=np.tile([0.0, 0.0, 5.0, 5.0], (phrase_image.size, 1)),
        region_is_gt=np.zeros(region_image.size, dtype=bool),
        phrase_chain=np.arange(phrase_image.size) // 2,
    )
    return PhraseRegionSplit(
        data=data,
        image_ids=np.array([f"img{i}" for i in range(n_images)], dtype=object),
        region_ids=np.array([f"r{i}" for i in range(region_image.size)], dtype=object),
        phrase_ids=np.array([f"p{i}" for i in range(phrase_image.size)], dtype=object),
        phrase_types=np.array(["people"] * phrase_image.size, dtype=object),
    )


def test_first_images_of_a_phrase_split_keep_their_regions_and_phrases_only() -> None:
    split = _phrase_split(n_images=5, regions_per_image=3, phrases_per_image=2)
    subset = first_images(split, 2)
    assert subset.image_ids.tolist() == ["img0", "img1"]
    assert subset.region_ids.tolist() == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert subset.phrase_ids.tolist() == ["p0", "p1", "p2", "p3"]
    np.testing.assert_array_equal(subset.data.region_features, split.data.region_features[:6])
    assert subset.data.n_images == 2
    assert subset.data.phrase_chain.tolist() == [0, 0, 1, 1]
    assert first_images(split, 0) is split and first_images(split, 9) is split


def test_membership_by_hashing_matches_numpy() -> None:
    values = np.array(["a", "b", "c", "a", "z"], dtype=object)
    of = np.array(["a", "z"], dtype=object)
    assert is_member(values, of).tolist() == np.isin(values, of).tolist()
