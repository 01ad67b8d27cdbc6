"""Losses against literal loop implementations of the formulas (float64, values and grads)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    EmbeddingLossConfig,
    embedding_loss,
    logistic_loss,
    pairwise_distance,
    region_phrase_embedding_loss,
)

TOL = 1e-6


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(((a - b) ** 2).sum() + 1e-4)


def _ranked_term(rows: list[tuple[torch.Tensor, list[torch.Tensor]]], k: int, margin: float):
    """Sum over anchors of their k largest hinges / sum over anchors of min(k, #negatives)."""
    total = torch.zeros((), dtype=torch.float64)
    slots = 0
    for positive, negatives in rows:
        hinges = sorted(
            (torch.clamp(margin + positive - n, min=0.0) for n in negatives),
            key=lambda h: float(h.detach()),
            reverse=True,
        )
        kept = hinges[:k]
        for hinge in kept:
            total = total + hinge
        slots += len(kept)
    return total / max(slots, 1)


def reference_embedding_loss(image, text, text_image, config, image_ids=None, extra=()):
    """``extra``: (s, t) pairs, t an extra neighbor of s (beyond s's image's texts)."""
    n_image, n_text = image.shape[0], text.shape[0]
    ids = list(range(n_image)) if image_ids is None else [int(i) for i in image_ids]
    group = [ids[int(text_image[s])] for s in range(n_text)]
    k = 1 if config.kind == "vse_hardest" else config.top_k
    m = config.margin

    sentence_rows = []
    image_rows = []
    neighbor_rows = []
    for s in range(n_text):
        x = int(text_image[s])
        pos = _distance(text[s], image[x])
        sentence_rows.append(
            (pos, [_distance(text[s], image[j]) for j in range(n_image) if ids[j] != group[s]])
        )
        image_rows.append(
            (pos, [_distance(image[x], text[t]) for t in range(n_text) if group[t] != group[s]])
        )
        in_neighborhood = [group[t] == group[s] or (s, t) in extra for t in range(n_text)]
        neighbors = [t for t in range(n_text) if t != s and in_neighborhood[t]]
        if neighbors:
            farthest = max(
                (_distance(text[s], text[t]) for t in neighbors), key=lambda d: float(d.detach())
            )
            negatives = [
                _distance(text[s], text[u]) for u in range(n_text) if not in_neighborhood[u]
            ]
            neighbor_rows.append((farthest, negatives))
    terms = {
        "sentence": _ranked_term(sentence_rows, k, m),
        "image": _ranked_term(image_rows, k, m),
        "neighbor": _ranked_term(neighbor_rows, k, m),
    }
    total = (
        config.lambda_sentence * terms["sentence"]
        + config.lambda_image * terms["image"]
        + config.lambda_neighbor * terms["neighbor"]
    )
    return total, terms


def reference_region_loss(region, phrase, positive, negative, config):
    k = 1 if config.kind == "vse_hardest" else config.top_k
    m = config.margin
    n_phrase, n_region = positive.shape
    phrase_rows, region_rows, neighbor_rows = [], [], []
    for p in range(n_phrase):
        for r in range(n_region):
            if not positive[p, r]:
                continue
            pos = _distance(phrase[p], region[r])
            phrase_rows.append(
                (pos, [_distance(phrase[p], region[n]) for n in range(n_region) if negative[p, n]])
            )
            region_rows.append(
                (pos, [_distance(region[r], phrase[q]) for q in range(n_phrase) if negative[q, r]])
            )
            others = [o for o in range(n_region) if o != r and positive[p, o]]
            if others:
                farthest = max(
                    (_distance(region[r], region[o]) for o in others),
                    key=lambda d: float(d.detach()),
                )
                neg = [_distance(region[r], region[n]) for n in range(n_region) if negative[p, n]]
                neighbor_rows.append((farthest, neg))
    terms = {
        "phrase": _ranked_term(phrase_rows, k, m),
        "region": _ranked_term(region_rows, k, m),
        "region_neighbor": _ranked_term(neighbor_rows, k, m),
    }
    total = (
        config.lambda_sentence * terms["phrase"]
        + config.lambda_image * terms["region"]
        + config.lambda_region_neighbor * terms["region_neighbor"]
    )
    return total, terms


def _unit(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    raw = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    return F.normalize(raw, dim=1).requires_grad_(True)


def _compare(loss_fn, reference_fn, inputs: tuple[torch.Tensor, torch.Tensor], *args, **kwargs):
    total, terms = loss_fn(*inputs, *args, **kwargs)
    grads = torch.autograd.grad(total, inputs)
    ref_total, ref_terms = reference_fn(*inputs, *args, **kwargs)
    ref_grads = torch.autograd.grad(ref_total, inputs)
    assert set(terms) == set(ref_terms)
    for name in terms:
        assert terms[name].item() == pytest.approx(ref_terms[name].item(), abs=TOL), name
    assert total.item() == pytest.approx(ref_total.item(), abs=TOL)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=TOL, rtol=0)
    return total, terms


# (per-image sentence counts, image_ids or None): includes an image with 3 sentences, one
# with 1, one with none, and duplicate image rows.
BATCHES = [
    ([3, 1, 2, 2], None),
    ([2, 2, 2, 2, 2, 2], None),
    ([1, 1, 1, 1, 1], None),
    ([3, 0, 1, 2, 1], None),
    ([2, 1, 2, 1, 2], [7, 3, 7, 5, 3]),
    ([1, 1, 2], [4, 4, 9]),
]


@pytest.mark.parametrize(("counts", "image_ids"), BATCHES)
@pytest.mark.parametrize("top_k", [2, 10])
@pytest.mark.parametrize("kind", ["topk_hinge", "vse_hardest"])
def test_embedding_loss_matches_loop(counts, image_ids, top_k, kind):
    generator = torch.Generator().manual_seed(sum(counts) * 31 + top_k)
    text_image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    text_image = text_image[torch.randperm(text_image.numel(), generator=generator)]
    # A large margin makes most hinges active, so top-K selection actually decides the value.
    config = EmbeddingLossConfig(margin=0.8, top_k=top_k, kind=kind)
    inputs = (_unit(len(counts), 6, generator), _unit(text_image.numel(), 6, generator))
    ids = None if image_ids is None else torch.tensor(image_ids)
    total, terms = _compare(
        lambda i, t, ti, c, image_ids=None: embedding_loss(i, t, ti, c, image_ids=image_ids),
        reference_embedding_loss,
        inputs,
        text_image,
        config,
        image_ids=ids,
    )
    assert total.item() > 0


@pytest.mark.parametrize("top_k", [2, 10])
def test_extra_neighbors_join_the_neighborhood_term(top_k):
    generator = torch.Generator().manual_seed(5)
    text_image = torch.tensor([0, 0, 1, 2, 2, 3, 1])
    # Text 3 (image 2) gains text 2 (image 1) and text 5 (image 3, alone otherwise); text 5
    # gains text 0: a text without a same-image neighbor becomes an anchor.
    pairs = [(3, 2), (3, 5), (5, 0)]
    extra = torch.tensor(pairs).T
    config = EmbeddingLossConfig(margin=0.8, top_k=top_k)
    inputs = (_unit(4, 6, generator), _unit(7, 6, generator))
    _, terms = _compare(
        lambda i, t, ti, c, extra=(): embedding_loss(i, t, ti, c, extra_neighbors=extra),
        lambda i, t, ti, c, extra=(): reference_embedding_loss(i, t, ti, c, extra=set(pairs)),
        inputs,
        text_image,
        config,
        extra=extra,
    )
    plain = embedding_loss(*inputs, text_image, config)[1]
    assert terms["neighbor"].item() != pytest.approx(plain["neighbor"].item())
    # The ranking terms do not change: kNN neighbors only shape the neighborhood term.
    for name in ("sentence", "image"):
        assert terms[name].item() == pytest.approx(plain[name].item())


def test_top_k_selects_largest_violations_only():
    # Text 0's positive image is row 0; three negative images at known distances.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    config = EmbeddingLossConfig(margin=2.0, top_k=2, lambda_image=0, lambda_neighbor=0)
    _, terms = embedding_loss(image, text, torch.tensor([0]), config)
    pos = math.sqrt(1e-4)
    hinges = sorted(
        (2.0 + pos - math.sqrt(d2 + 1e-4) for d2 in (2.0, 4.0, 0.8)),
        reverse=True,
    )
    assert float(terms["sentence"]) == pytest.approx(sum(hinges[:2]) / 2, abs=1e-9)


def test_single_image_batch_has_zero_loss_and_finite_grads():
    generator = torch.Generator().manual_seed(0)
    image, text = _unit(1, 4, generator), _unit(3, 4, generator)
    total, terms = embedding_loss(image, text, torch.zeros(3, dtype=torch.long))
    assert total.item() == 0.0
    image_grad, text_grad = torch.autograd.grad(total, (image, text))
    assert torch.all(image_grad == 0) and torch.all(text_grad == 0)


def test_embedding_loss_accepts_half_precision():
    generator = torch.Generator().manual_seed(5)
    image, text = _unit(4, 8, generator), _unit(8, 8, generator)
    text_image = torch.arange(4).repeat(2)
    full, _ = embedding_loss(image.float(), text.float(), text_image)
    half, _ = embedding_loss(image.bfloat16(), text.bfloat16(), text_image)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), abs=0.02)


def test_embedding_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="text_image"):
        embedding_loss(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="same d"):
        embedding_loss(torch.zeros(2, 3), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="kind"):
        EmbeddingLossConfig(kind="softmax")


def test_pairwise_distance_formula():
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    b = torch.randn(3, 7, generator=generator, dtype=torch.float64)
    expected = torch.sqrt(torch.cdist(a, b) ** 2 + 1e-4)
    torch.testing.assert_close(pairwise_distance(a, b), expected, atol=1e-9, rtol=0)
    # Identical vectors: the epsilon floor, and a finite gradient.
    a.requires_grad_(True)
    same = pairwise_distance(a, a).diagonal()
    torch.testing.assert_close(same, torch.full_like(same, 0.01), atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(same.sum(), a)
    assert torch.isfinite(grad).all()


def _region_case(n_phrase: int, n_region: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    draw = torch.rand(n_phrase, n_region, generator=generator)
    positive = draw < 0.3
    negative = draw > 0.45
    positive[0] = False
    positive[0, :3] = True  # a phrase with three neighboring positive regions
    negative[0, :3] = False
    positive[1] = False
    positive[1, 3] = True  # a phrase with a single positive region
    negative[1, 3] = False
    return positive, negative, generator


@pytest.mark.parametrize(("n_phrase", "n_region", "seed"), [(3, 8, 0), (5, 12, 1), (2, 5, 2)])
@pytest.mark.parametrize("top_k", [2, 10])
@pytest.mark.parametrize("kind", ["topk_hinge", "vse_hardest"])
def test_region_phrase_loss_matches_loop(n_phrase, n_region, seed, top_k, kind):
    positive, negative, generator = _region_case(n_phrase, n_region, seed)
    config = EmbeddingLossConfig(margin=0.8, top_k=top_k, kind=kind, lambda_region_neighbor=0.3)
    inputs = (_unit(n_region, 5, generator), _unit(n_phrase, 5, generator))
    total, terms = _compare(
        region_phrase_embedding_loss,
        reference_region_loss,
        inputs,
        positive,
        negative,
        config,
    )
    assert terms["region_neighbor"].item() > 0


def test_region_phrase_loss_rejects_overlapping_masks():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="both positive and negative"):
        region_phrase_embedding_loss(torch.zeros(3, 4), torch.zeros(2, 4), mask, mask)


def test_logistic_loss_matches_formula():
    generator = torch.Generator().manual_seed(3)
    scores = (torch.randn(9, generator=generator, dtype=torch.float64) * 30).requires_grad_(True)
    labels = torch.tensor([1, -1, 1, 1, -1, -1, 1, -1, 1], dtype=torch.float64)
    loss = logistic_loss(scores, labels)
    (grad,) = torch.autograd.grad(loss, scores)
    expected = 0.0
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        z = -y * s  # log(1 + e^z), written to stay finite for large |z|
        expected += (z + math.log1p(math.exp(-z))) if z > 0 else math.log1p(math.exp(z))
    expected /= 9
    assert loss.item() == pytest.approx(expected, abs=TOL)
    pairs = zip(scores.tolist(), labels.tolist(), strict=True)
    expected_grad = torch.tensor(
        [-y / (1 + math.exp(y * s)) / 9 for s, y in pairs], dtype=torch.float64
    )
    torch.testing.assert_close(grad, expected_grad, atol=TOL, rtol=0)


def test_logistic_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        logistic_loss(torch.zeros(3), torch.ones(3, 1))


def test_region_phrase_loss_without_positive_pairs_is_zero():
    region = torch.randn(4, 3, requires_grad=True)
    total, terms = region_phrase_embedding_loss(
        region, torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 4) > 0
    )
    assert total.item() == 0.0 and set(terms) == {"phrase", "region", "region_neighbor"}
    total.backward()
    assert torch.all(region.grad == 0)


def reference_phrase_neighbor_term(phrase, chain, k, margin):
    """Loop form: phrases of one chain are neighbors, the other chains' phrases negatives."""
    rows = []
    for p in range(phrase.shape[0]):
        neighbors = [q for q in range(phrase.shape[0]) if q != p and chain[q] == chain[p]]
        if not neighbors:
            continue
        farthest = max(
            (_distance(phrase[p], phrase[q]) for q in neighbors), key=lambda d: float(d.detach())
        )
        others = [
            _distance(phrase[p], phrase[u]) for u in range(len(chain)) if chain[u] != chain[p]
        ]
        rows.append((farthest, others))
    return _ranked_term(rows, k, margin)


@pytest.mark.parametrize("top_k", [1, 3])
def test_phrase_neighbor_term_adds_its_weighted_loop_value(top_k):
    positive, negative, generator = _region_case(6, 10, 3)
    region, phrase = _unit(10, 5, generator), _unit(6, 5, generator)
    # Chains {0, 2, 5}, {1, 3}, {4}: phrase 4 has no neighbor and is no anchor.
    chain = torch.tensor([7, 9, 7, 9, 11, 7])
    off = EmbeddingLossConfig(margin=0.8, top_k=top_k)
    on = EmbeddingLossConfig(margin=0.8, top_k=top_k, lambda_phrase_neighbor=0.4)
    before, before_terms = region_phrase_embedding_loss(region, phrase, positive, negative, off)
    # Weight 0: the loss and its terms are those without chains.
    same, same_terms = region_phrase_embedding_loss(
        region, phrase, positive, negative, off, phrase_chain=chain
    )
    assert same.item() == before.item() and set(same_terms) == set(before_terms)
    total, terms = region_phrase_embedding_loss(
        region, phrase, positive, negative, on, phrase_chain=chain
    )
    expected = reference_phrase_neighbor_term(phrase, chain.tolist(), top_k, 0.8)
    assert expected.item() > 0
    assert terms["phrase_neighbor"].item() == pytest.approx(expected.item(), abs=TOL)
    assert total.item() == pytest.approx(before.item() + 0.4 * expected.item(), abs=TOL)
    for name in before_terms:
        assert terms[name].item() == before_terms[name].item()


def test_phrase_neighbor_term_needs_chains():
    positive, negative, generator = _region_case(3, 6, 0)
    config = EmbeddingLossConfig(lambda_phrase_neighbor=0.1)
    with pytest.raises(ValueError, match="phrase_chain"):
        region_phrase_embedding_loss(
            _unit(6, 4, generator), _unit(3, 4, generator), positive, negative, config
        )
