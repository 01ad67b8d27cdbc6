"""Losses of the two-branch networks.

Bidirectional ranking loss with neighborhood constraints (embedding network) and logistic
loss (similarity network).

Every ranking term is built the same way. An *anchor* has one positive distance ``pos`` and
a set of negatives. Its violations ``m + pos − d(anchor, negative)`` are ranked, the ``K``
largest are kept with the hinge ``[x]₊``, and the term is

    sum of kept hinges / sum over anchors of min(K, number of negatives of the anchor)

i.e. the mean over the (anchor, negative) slots that exist. With the same number of
negatives for every anchor and ``K`` below it this is the authors' "mean over anchors × K";
an anchor with fewer than ``K`` negatives contributes only its real ones (zero hinges
included), and an anchor without negatives contributes nothing. A term with no slot is 0.

Since ``pos`` is fixed per anchor, the largest violations are those of the nearest
negatives: the top-K is taken on distances with non-negatives set to ``+inf``, so they are
never chosen over a real negative and their hinge ``[m + pos − ∞]₊`` is 0.
``kind="vse_hardest"`` (VSE++) keeps only the hardest negative per anchor (K = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DISTANCE_EPSILON = 1e-4
LossKind = Literal["topk_hinge", "vse_hardest"]


@dataclass(frozen=True)
class EmbeddingLossConfig:
    """Weights and shape of the bidirectional ranking loss.

    ``lambda_sentence`` weights the sentence-anchored term (ranks images; λ1 = 1.5),
    ``lambda_image`` the image-anchored term (ranks sentences; 1.0, the authors' code leaves
    it unweighted: the paper's own λ2 weights the image–image neighborhood term, a different
    term), ``lambda_neighbor`` the sentence–sentence neighborhood term (λ3 = 0.05). For the
    phrase task the phrase plays the sentence and the region the image;
    ``lambda_region_neighbor`` weights the region–region neighborhood term (the paper's
    image–image term; no value was published for it, so the default reuses λ3, a project
    choice) and ``lambda_phrase_neighbor`` the phrase–phrase term over phrases of the same
    entity chain (off at 0).
    """

    margin: float = 0.05
    top_k: int = 10
    lambda_sentence: float = 1.5
    lambda_image: float = 1.0
    lambda_neighbor: float = 0.05
    lambda_region_neighbor: float = 0.05
    lambda_phrase_neighbor: float = 0.0
    kind: LossKind = "topk_hinge"

    def __post_init__(self) -> None:
        if self.kind not in ("topk_hinge", "vse_hardest"):
            raise ValueError(f"kind must be 'topk_hinge' or 'vse_hardest', got {self.kind!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")

    @property
    def negatives_per_anchor(self) -> int:
        return 1 if self.kind == "vse_hardest" else self.top_k


def pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(n_a, n_b)``: ``sqrt(|a|² − 2a·b + |b|² + 1e-4)`` (authors' code).

    The root's argument is clamped at the epsilon so rounding cannot make it negative; the
    epsilon keeps the gradient finite for identical vectors.
    """
    norms = a.pow(2).sum(1, keepdim=True) + (b.pow(2).sum(1) + DISTANCE_EPSILON)[None, :]
    squared = torch.addmm(norms, a, b.T, alpha=-2.0)
    return squared.clamp_min(DISTANCE_EPSILON).sqrt()


def _only_negatives(distances: torch.Tensor, is_negative: torch.Tensor) -> torch.Tensor:
    return distances.masked_fill(~is_negative, float("inf"))


def _nearest_negatives(
    distances: torch.Tensor, is_negative: torch.Tensor | None, k: int, dim: int = 1
) -> torch.Tensor:
    """The ``k`` smallest negative distances along ``dim`` (moved last), ``+inf`` where fewer.

    ``is_negative=None`` means ``distances`` already holds ``+inf`` at non-negatives.

    Per anchor the largest violations ``m + pos − d`` are those of the nearest negatives, so
    the top-K is taken on distances, once per row shared by all anchors of that row.
    """
    k_eff = min(k, distances.shape[dim])
    if k_eff == 0:
        shape = list(distances.shape)
        del shape[dim]
        return distances.new_full((*shape, 0), float("inf"))
    masked = distances if is_negative is None else _only_negatives(distances, is_negative)
    nearest = masked.topk(k_eff, dim=dim, largest=False).values
    return nearest if dim in (-1, distances.ndim - 1) else nearest.movedim(dim, -1)


def _hinge_mean(positive: torch.Tensor, nearest: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``[m + positive − nearest]₊`` over the finite slots of ``nearest (A, K)``.

    ``+inf`` slots (no such negative) and ``-inf`` positives (not an anchor) give
    ``relu(−inf) = 0`` and are not counted; with no slot at all the term is 0, and the
    denominator is clamped instead of branched on so no host sync is needed.
    """
    hinges = torch.relu(margin + positive[:, None] - nearest)
    slots = (torch.isfinite(nearest) & torch.isfinite(positive)[:, None]).sum()
    return hinges.sum() / slots.clamp_min(1)


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    # Distances of unit vectors differ in the third decimal; half precision cannot rank them.
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def embedding_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_image: torch.Tensor,
    config: EmbeddingLossConfig | None = None,
    *,
    image_ids: torch.Tensor | None = None,
    extra_neighbors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bidirectional top-K ranking loss with the sentence neighborhood constraint.

    ``image_emb (B_i, d)``, ``text_emb (B_t, d)``; ``text_image (B_t,)`` is the row of each
    text's positive image. Images may have any number of texts in the batch (zero included).
    ``image_ids (B_i,)``, optional, names the image of each row: rows with equal ids (e.g. the
    same image gathered from two devices) are one image, never each other's negatives, and
    their texts are neighbors. Without it every row is a distinct image.

    Terms (unweighted, returned in ``terms``):

    - ``sentence``: anchor = each text s; ``[m + d(s, x(s)) − d(s, x_j)]₊`` over images x_j
      not the image of s;
    - ``image``: anchor = each positive pair (x(s), s); ``[m + d(x, s) − d(x, t)]₊`` over
      texts t of other images;
    - ``neighbor``: anchor = each text s whose image has another text in the batch;
      ``[m + max_{t ∈ N(s)} d(s, t) − d(s, u)]₊`` over texts u of other images, N(s) the
      other texts of the same image — plus, with ``extra_neighbors (2, E)`` (rows of
      (text, neighbor text) pairs, e.g. nearest sentences by feature), those neighbors, which
      then are not among its negatives u either.

    Returns ``(λ1·sentence + lambda_image·image + λ3·neighbor, terms)``.
    """
    config = config or EmbeddingLossConfig()
    image_emb, text_emb = _as_float(image_emb), _as_float(text_emb)
    _check_pairs(image_emb, text_emb, text_image, image_ids)
    k, margin = config.negatives_per_anchor, config.margin

    image_group = (
        image_ids
        if image_ids is not None
        else torch.arange(image_emb.shape[0], device=image_emb.device)
    )
    text_group = image_group[text_image]

    text_image_dist = pairwise_distance(text_emb, image_emb)  # (B_t, B_i)
    positive = text_image_dist.gather(1, text_image[:, None]).squeeze(1)  # d(s, x(s))
    negative_dist = _only_negatives(text_image_dist, text_group[:, None] != image_group[None, :])

    sentence_term = _hinge_mean(positive, _nearest_negatives(negative_dist, None, k), margin)
    # Anchor (x(s), s) ranks the texts of other images by their distance to x(s): the same
    # nearest negatives for every anchor of that image row.
    image_nearest = _nearest_negatives(negative_dist, None, k, dim=0)
    image_term = _hinge_mean(positive, image_nearest[text_image], margin)

    # Row s: the texts of its image and its extra neighbors (directed pairs).
    neighborhood = text_group[:, None] == text_group[None, :]
    if extra_neighbors is not None:
        neighborhood[extra_neighbors[0], extra_neighbors[1]] = True
    neighbor_term = _neighborhood_term(text_emb, neighborhood, k, margin)

    terms = {"sentence": sentence_term, "image": image_term, "neighbor": neighbor_term}
    total = (
        config.lambda_sentence * sentence_term
        + config.lambda_image * image_term
        + config.lambda_neighbor * neighbor_term
    )
    return total, terms


def _neighborhood_term(
    emb: torch.Tensor, neighborhood: torch.Tensor, k: int, margin: float
) -> torch.Tensor:
    """``[m + max_{t ∈ N(s)} d(s, t) − d(s, u)]₊`` over the K nearest u outside N(s), for
    every row s with a neighbor; ``neighborhood (n, n)`` is N(s) with s itself included."""
    dist = pairwise_distance(emb, emb)
    neighbors = neighborhood.clone()
    neighbors.fill_diagonal_(False)
    # -inf for a row without neighbors: not an anchor (see _hinge_mean).
    farthest_neighbor = dist.masked_fill(~neighbors, float("-inf")).amax(1)
    return _hinge_mean(farthest_neighbor, _nearest_negatives(dist, ~neighborhood, k), margin)


def region_phrase_embedding_loss(
    region_emb: torch.Tensor,
    phrase_emb: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    config: EmbeddingLossConfig | None = None,
    *,
    phrase_chain: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Ranking loss for phrase localization with the region–region neighborhood term.

    ``region_emb (R, d)``, ``phrase_emb (P, d)``; ``positive (P, R)`` marks regions that match
    a phrase (IoU ≥ threshold with its ground truth), ``negative (P, R)`` regions that are its
    negatives (IoU < 0.3); the rest are ignored. Whether regions of other images count as
    negatives is the caller's choice, made in ``negative``. Every positive pair (p, r) is an
    anchor of each term:

    - ``phrase``: ``[m + d(p, r) − d(p, n)]₊`` over regions n negative for p
      (``lambda_sentence``);
    - ``region``: ``[m + d(r, p) − d(r, q)]₊`` over phrases q for which r is negative
      (``lambda_image``);
    - ``region_neighbor``: regions positive for the same phrase are neighbors; when p has
      another positive region, ``[m + max_{r' ∈ pos(p), r' ≠ r} d(r, r') − d(r, n)]₊`` over
      regions n negative for p (``lambda_region_neighbor``);
    - ``phrase_neighbor``, only when ``lambda_phrase_neighbor`` > 0: ``phrase_chain (P,)``
      names each phrase's entity chain (the same chain is the same entity of the same
      image), and the phrases of one chain are neighbors; anchor = each phrase with another
      phrase of its chain, ``[m + max_{q ∈ N(p)} d(p, q) − d(p, u)]₊`` over phrases u of
      other chains (the sentence neighborhood term, with chains in place of images).
    """
    config = config or EmbeddingLossConfig()
    region_emb, phrase_emb = _as_float(region_emb), _as_float(phrase_emb)
    expected = (phrase_emb.shape[0], region_emb.shape[0])
    for name, mask in (("positive", positive), ("negative", negative)):
        if mask.dtype != torch.bool or tuple(mask.shape) != expected:
            raise ValueError(
                f"{name} must be a bool tensor of shape {expected}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
    if bool((positive & negative).any()):
        raise ValueError("a (phrase, region) pair is marked both positive and negative")
    with_phrase_neighbor = config.lambda_phrase_neighbor > 0
    if with_phrase_neighbor and (
        phrase_chain is None or tuple(phrase_chain.shape) != (phrase_emb.shape[0],)
    ):
        raise ValueError(
            f"lambda_phrase_neighbor > 0 needs phrase_chain of shape ({phrase_emb.shape[0]},)"
        )
    k, margin = config.negatives_per_anchor, config.margin
    phrase_neighbor_terms: dict[str, torch.Tensor] = {}
    if with_phrase_neighbor:
        assert phrase_chain is not None
        same_chain = phrase_chain[:, None] == phrase_chain[None, :]
        phrase_neighbor_terms["phrase_neighbor"] = _neighborhood_term(
            phrase_emb, same_chain, k, margin
        )

    anchor_phrase, anchor_region = positive.nonzero(as_tuple=True)
    if anchor_phrase.numel() == 0:
        zero = (region_emb.sum() + phrase_emb.sum()) * 0.0
        terms = {"phrase": zero, "region": zero, "region_neighbor": zero}
        return _with_phrase_neighbor(zero, terms, phrase_neighbor_terms, config)
    phrase_region_dist = pairwise_distance(phrase_emb, region_emb)  # (P, R)
    anchor_positive = phrase_region_dist[anchor_phrase, anchor_region]

    negative_dist = _only_negatives(phrase_region_dist, negative)
    phrase_nearest = _nearest_negatives(negative_dist, None, k)  # (P, K)
    phrase_term = _hinge_mean(anchor_positive, phrase_nearest[anchor_phrase], margin)
    region_nearest = _nearest_negatives(negative_dist, None, k, dim=0)  # (R, K)
    region_term = _hinge_mean(anchor_positive, region_nearest[anchor_region], margin)

    region_neighbor_term = _region_neighbor_term(
        region_emb, positive, negative, anchor_phrase, anchor_region, k, margin
    )

    terms = {"phrase": phrase_term, "region": region_term, "region_neighbor": region_neighbor_term}
    total = (
        config.lambda_sentence * phrase_term
        + config.lambda_image * region_term
        + config.lambda_region_neighbor * region_neighbor_term
    )
    return _with_phrase_neighbor(total, terms, phrase_neighbor_terms, config)


def _with_phrase_neighbor(
    total: torch.Tensor,
    terms: dict[str, torch.Tensor],
    phrase_neighbor_terms: dict[str, torch.Tensor],
    config: EmbeddingLossConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    # Added last, and only when on, so the loss without it is the same computation as before.
    for term in phrase_neighbor_terms.values():
        total = total + config.lambda_phrase_neighbor * term
    return total, terms | phrase_neighbor_terms


def _region_neighbor_term(
    region_emb: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    anchor_phrase: torch.Tensor,
    anchor_region: torch.Tensor,
    k: int,
    margin: float,
) -> torch.Tensor:
    """The region–region neighborhood term over only the regions that can matter: for each
    anchor, the columns its phrase marks positive or negative (its own image's proposals,
    unless negatives cross images), and distances from each distinct anchor region only.
    Equal to the term over full ``(anchors, R)`` matrices, whose masking and backward cost
    more than both branches when a batch holds thousands of proposals."""
    relevant = positive | negative
    # Per phrase, its relevant columns first (stable), then padding.
    marked, columns = relevant.sort(dim=1, descending=True, stable=True)
    width = max(1, int(marked.sum(1).max()))
    columns, marked = columns[:, :width], marked[:, :width]
    unique_regions, anchor_of_region = anchor_region.unique(return_inverse=True)
    from_anchors = pairwise_distance(region_emb[unique_regions], region_emb)  # (U, R)
    anchor_columns = columns[anchor_phrase]  # (A, W)
    distances = from_anchors[anchor_of_region[:, None], anchor_columns]  # (A, W)
    neighbors = positive.gather(1, columns)[anchor_phrase] & marked[anchor_phrase]
    neighbors &= anchor_columns != anchor_region[:, None]
    negatives = negative.gather(1, columns)[anchor_phrase] & marked[anchor_phrase]
    farthest_neighbor = distances.masked_fill(~neighbors, float("-inf")).amax(1)
    return _hinge_mean(farthest_neighbor, _nearest_negatives(distances, negatives, k), margin)


def logistic_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean log(1 + exp(−y·s))`` for labels ``y`` in {+1, −1}, computed stably (softplus)."""
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same shape, got {tuple(scores.shape)} "
            f"and {tuple(labels.shape)}"
        )
    return F.softplus(-labels.to(scores.dtype) * scores).mean()


def _check_pairs(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_image: torch.Tensor,
    image_ids: torch.Tensor | None,
) -> None:
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"embeddings must be (n, d) with the same d, got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )
    if text_image.shape != (text_emb.shape[0],) or text_image.dtype != torch.long:
        raise ValueError(
            f"text_image must be a long tensor of shape ({text_emb.shape[0]},), got "
            f"{text_image.dtype} {tuple(text_image.shape)}"
        )
    if image_ids is not None and image_ids.shape != (image_emb.shape[0],):
        raise ValueError(
            f"image_ids must have shape ({image_emb.shape[0]},), got {tuple(image_ids.shape)}"
        )
