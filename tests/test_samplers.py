"""Samplers: coverage, neighborhoods, deduplication, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from models.samplers import NeighborhoodSampler, PairSampler, TripletSampler

# 40 images with 1 to 6 captions each, captions listed in scrambled order.
_RNG = np.random.default_rng(123)
CAPTION_IMAGE = _RNG.permutation(np.repeat(np.arange(40), _RNG.integers(1, 7, size=40)))


def _check_batch(batch, caption_image):
    assert np.array_equal(np.unique(batch.image_idx), batch.image_idx), "images repeat"
    assert np.array_equal(np.unique(batch.caption_idx), batch.caption_idx), "captions repeat"
    assert np.array_equal(
        batch.image_idx[batch.caption_to_batch_image], caption_image[batch.caption_idx]
    )
    # Every image row has at least one of its captions.
    assert set(batch.caption_to_batch_image.tolist()) == set(range(batch.image_idx.size))


def _anchors_of(sampler):
    """Anchors as the sampler drew them: its permutation, batch by batch."""
    rng = sampler._rng()
    return [a.copy() for a in sampler._anchor_batches(rng)]


@pytest.mark.parametrize("drop_last", [True, False])
def test_neighborhood_sampler_uses_each_caption_once_as_anchor(drop_last):
    sampler = NeighborhoodSampler(CAPTION_IMAGE, batch_images=16, seed=4, drop_last=drop_last)
    n = CAPTION_IMAGE.size
    assert len(sampler) == (n // 16 if drop_last else -(-n // 16))
    anchors = np.concatenate(_anchors_of(sampler))
    assert np.unique(anchors).size == anchors.size
    assert anchors.size == (n // 16 * 16 if drop_last else n)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch, batch_anchors in zip(batches, _anchors_of(sampler), strict=True):
        assert np.isin(batch_anchors, batch.caption_idx).all()


def test_neighborhood_sampler_pairs_sentences_of_each_image():
    counts = np.bincount(CAPTION_IMAGE)
    sampler = NeighborhoodSampler(CAPTION_IMAGE, batch_images=16, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for batch in sampler:
            _check_batch(batch, CAPTION_IMAGE)
            per_image = np.bincount(batch.caption_to_batch_image)
            wanted = np.minimum(counts[batch.image_idx], 2)
            assert np.all(per_image >= wanted)


def test_neighborhood_sampler_draws_distinct_companions():
    caption_image = np.repeat(np.arange(6), [6, 6, 3, 4, 5, 1])
    sampler = NeighborhoodSampler(caption_image, batch_images=1, sentences_per_image=4, seed=9)
    counts = np.bincount(caption_image)
    for batch in sampler:
        image = batch.image_idx[0]
        assert batch.image_idx.size == 1
        assert batch.caption_idx.size == min(4, counts[image])


def test_neighborhood_sampler_merges_anchors_of_one_image():
    # Two images only: any batch of 3 anchors holds two of one image, which share a row.
    caption_image = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    for batch in NeighborhoodSampler(caption_image, batch_images=3, seed=1):
        assert batch.image_idx.size <= 2
        _check_batch(batch, caption_image)


def test_neighborhood_sampler_is_deterministic_per_seed_and_epoch():
    def draw(seed, epoch):
        sampler = NeighborhoodSampler(CAPTION_IMAGE, batch_images=16, seed=seed)
        sampler.set_epoch(epoch)
        return [np.concatenate([b.caption_idx, b.image_idx]) for b in sampler]

    same = draw(5, 2)
    assert all(np.array_equal(a, b) for a, b in zip(same, draw(5, 2), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(same, draw(5, 3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(same, draw(6, 2), strict=True))


def test_neighborhood_sampler_companions_are_random():
    # An image with 6 captions: over epochs, the companion of a given anchor varies.
    caption_image = np.zeros(6, dtype=np.int64)
    sampler = NeighborhoodSampler(caption_image, batch_images=1, seed=0)
    companions = set()
    for epoch in range(30):
        sampler.set_epoch(epoch)
        for batch in sampler:
            companions.add(tuple(batch.caption_idx.tolist()))
    assert len(companions) > 6


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D integer"):
        NeighborhoodSampler(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="batch size"):
        TripletSampler(np.array([0, 1]), batch_size=0)
    with pytest.raises(ValueError, match="two images"):
        PairSampler(np.array([3, 3, 3]))


def test_triplet_sampler_covers_captions_and_dedups_images():
    sampler = TripletSampler(CAPTION_IMAGE, batch_size=20, seed=1, drop_last=False)
    seen = []
    for batch in sampler:
        _check_batch(batch, CAPTION_IMAGE)
        seen.append(batch.caption_idx)
    seen = np.concatenate(seen)
    assert np.array_equal(np.sort(seen), np.arange(CAPTION_IMAGE.size))


@pytest.mark.parametrize("side", ["caption", "image", "mixed"])
def test_pair_sampler_labels_and_negatives(side):
    sampler = PairSampler(
        CAPTION_IMAGE, batch_positives=10, negatives_per_positive=2, seed=3, negative_side=side
    )
    positives = []
    for batch in sampler:
        labels = batch.labels
        assert labels.tolist() == [1.0] * 10 + [-1.0] * 20
        matches = CAPTION_IMAGE[batch.caption_idx] == batch.image_idx
        assert np.array_equal(matches, labels > 0)
        negatives_source = np.repeat(batch.caption_idx[:10], 2)
        kept_caption = batch.caption_idx[10:] == negatives_source
        kept_image = batch.image_idx[10:] == CAPTION_IMAGE[negatives_source]
        if side == "caption":
            assert kept_image.all()
        elif side == "image":
            assert kept_caption.all()
        else:
            assert (kept_caption | kept_image).all() and kept_caption.any() and kept_image.any()
        positives.append(batch.caption_idx[:10])
    positives = np.concatenate(positives)
    assert np.unique(positives).size == positives.size == len(sampler) * 10


def test_pair_sampler_is_deterministic():
    def draw(epoch):
        sampler = PairSampler(CAPTION_IMAGE, batch_positives=8, seed=0)
        sampler.set_epoch(epoch)
        return np.concatenate([np.r_[b.caption_idx, b.image_idx] for b in sampler])

    assert np.array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_extra_neighbors_come_into_the_batch_and_are_listed():
    caption_image = np.repeat(np.arange(30), 3)
    rng = np.random.default_rng(2)
    # Caption j's extra neighbors: two captions of other images (none for every fifth caption).
    lists = [
        [] if j % 5 == 0 else rng.choice(np.flatnonzero(caption_image != caption_image[j]), 2)
        for j in range(caption_image.size)
    ]
    start = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    rows = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    sampler = NeighborhoodSampler(
        caption_image, batch_images=8, seed=1, extra_neighbors=(start, rows)
    )
    for batch, anchors in zip(sampler, _anchors_of(sampler), strict=True):
        _check_batch(batch, caption_image)
        listed = {(batch.caption_idx[a], batch.caption_idx[b]) for a, b in batch.extra_neighbors.T}
        # Exactly the (caption, extra neighbor) pairs with both ends in the batch.
        members = set(batch.caption_idx.tolist())
        expected = {(j, int(t)) for j in members for t in lists[j] if int(t) in members}
        assert listed == expected
        # Each anchor with extra neighbors brought one along (and its image).
        for anchor in anchors[anchors % 5 != 0]:
            assert any(int(t) in members for t in lists[anchor])
    with pytest.raises(ValueError, match="CSR pair over 90 captions"):
        NeighborhoodSampler(caption_image, extra_neighbors=(start[:-1], rows))
