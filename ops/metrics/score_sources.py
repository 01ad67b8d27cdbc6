"""Score sources: how blocks of caption columns of an image-caption score matrix are produced.

A source reads them from a stored matrix (numpy, memory-mapped or torch), calls a block
function, or computes them from embeddings; the ranking engine asks only for blocks, so the
full matrix is never held. Sources must be deterministic: computing the same block twice gives
the same values, since the engine may sweep a source more than once.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import numpy as np
import torch

from ops.device import device_for

# Target size of one score block, in elements: small enough to stay in cache on CPU.
CPU_BLOCK_ELEMENTS = 1 << 20
CUDA_BLOCK_ELEMENTS = 1 << 26

BlockFunction = Callable[[int, int], "np.ndarray | torch.Tensor"]
Similarity = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ScoreSource(abc.ABC):
    """Deterministic blocks of caption columns of an ``(n_images, n_captions)`` score matrix."""

    n_images: int
    n_captions: int
    device: torch.device
    # Stored values can be read in any block shape; computed ones only in the sweep's blocks,
    # since a product's rounding may depend on the shape it is computed in.
    any_block_shape = False

    @abc.abstractmethod
    def block(self, start: int, stop: int) -> torch.Tensor:
        """Scores of caption columns ``start:stop`` for every image row."""

    def rows_block(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return self.block(start, stop)[rows]

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        """Each caption's score with its own image, and a bound on how far that may be from the
        block value; ``None`` when no cheap estimate exists."""
        return None


class MatrixSource(ScoreSource):
    """A stored matrix (numpy, memory-mapped numpy or torch), optionally a row range and a
    subset of caption columns of it."""

    def __init__(
        self,
        scores: np.ndarray | torch.Tensor,
        device: torch.device,
        rows: tuple[int, int] | None = None,
        columns: np.ndarray | None = None,
    ) -> None:
        if scores.ndim != 2:
            raise ValueError(f"scores must be a 2-D (images, captions) matrix, got {scores.shape}")
        self.scores = scores
        self.device = device
        self.any_block_shape = True
        self.row_range = rows or (0, int(scores.shape[0]))
        self.columns = columns
        self.column_offset: int | None = 0
        if columns is not None:
            contiguous = len(columns) > 0 and np.array_equal(
                columns, np.arange(columns[0], columns[0] + len(columns))
            )
            self.column_offset = int(columns[0]) if contiguous else None
        self.n_images = self.row_range[1] - self.row_range[0]
        self.n_captions = int(scores.shape[1]) if columns is None else len(columns)

    def _column_index(self, start: int, stop: int) -> slice | np.ndarray:
        if self.column_offset is not None:
            return slice(self.column_offset + start, self.column_offset + stop)
        assert self.columns is not None
        return self.columns[start:stop]

    def _to_tensor(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            return values.to(self.device).contiguous()
        values = np.ascontiguousarray(values)
        if not values.flags.writeable:
            values = values.copy()
        return torch.from_numpy(values).to(self.device)

    def block(self, start: int, stop: int) -> torch.Tensor:
        first, last = self.row_range
        index = self._column_index(start, stop)
        if isinstance(index, slice):
            return self._to_tensor(self.scores[first:last, index])
        if isinstance(self.scores, torch.Tensor):
            index = torch.from_numpy(index)
        return self._to_tensor(self.scores[first:last][:, index])

    def rows_block(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        # A stored matrix has fixed values, so reading only the needed rows is exact.
        row_index = rows.cpu().numpy() + self.row_range[0]
        index = self._column_index(start, stop)
        if isinstance(self.scores, torch.Tensor):
            if not isinstance(index, slice):
                index = torch.from_numpy(index)
            return self._to_tensor(self.scores[torch.from_numpy(row_index)][:, index])
        return self._to_tensor(self.scores[row_index][:, index])

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float]:
        image_index = caption_image.cpu().numpy() + self.row_range[0]
        if self.columns is None:
            column_index = np.arange(self.n_captions)
        else:
            column_index = np.asarray(self.columns)
        if isinstance(self.scores, torch.Tensor):
            values = self.scores[torch.from_numpy(image_index), torch.from_numpy(column_index)]
        else:
            values = self.scores[image_index, column_index]
        return self._to_tensor(values), 0.0


class BlockFunctionSource(ScoreSource):
    def __init__(self, function: BlockFunction, n_images: int, n_captions: int, device) -> None:
        self.function = function
        self.n_images = n_images
        self.n_captions = n_captions
        self.device = device

    def block(self, start: int, stop: int) -> torch.Tensor:
        values = self.function(start, stop)
        if not isinstance(values, torch.Tensor):
            values = torch.from_numpy(np.array(values, copy=True))
        expected = (self.n_images, stop - start)
        if tuple(values.shape) != expected:
            raise ValueError(
                f"score function returned shape {tuple(values.shape)} for captions "
                f"{start}:{stop}, expected {expected}"
            )
        return values.to(self.device).contiguous()


class EmbeddingSource(ScoreSource):
    """Scores computed on the fly from image and caption embeddings."""

    def __init__(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        similarity: Similarity,
        device: torch.device,
    ) -> None:
        if image_emb.ndim != 2 or text_emb.ndim != 2:
            raise ValueError("embeddings must be 2-D (items, dimension)")
        if image_emb.shape[1] != text_emb.shape[1] and not callable(similarity):
            raise ValueError(
                f"image embeddings have dimension {image_emb.shape[1]} but caption "
                f"embeddings {text_emb.shape[1]}"
            )
        if isinstance(similarity, str) and similarity not in ("dot", "neg_euclidean"):
            raise ValueError(f"unknown similarity {similarity!r}; use 'dot' or 'neg_euclidean'")
        self.device = device
        self.image_emb = image_emb.to(device)
        self.text_emb = text_emb.to(device)
        self.similarity = similarity
        self.n_images = int(image_emb.shape[0])
        self.n_captions = int(text_emb.shape[0])
        if similarity == "neg_euclidean":
            self.image_sq = (self.image_emb * self.image_emb).sum(1)
            self.text_sq = (self.text_emb * self.text_emb).sum(1)

    def block(self, start: int, stop: int) -> torch.Tensor:
        text = self.text_emb[start:stop]
        if callable(self.similarity):
            return self.similarity(self.image_emb, text).contiguous()
        product = self.image_emb @ text.T
        if self.similarity == "dot":
            return product
        # Ranked by negative squared distance: the same order as the distance, fewer roundings.
        return 2 * product - self.image_sq[:, None] - self.text_sq[start:stop][None, :]

    def positive_estimate(self, caption_image: torch.Tensor) -> tuple[torch.Tensor, float] | None:
        if callable(self.similarity):
            return None
        values = []
        tolerance = 0.0
        step = max(1, CPU_BLOCK_ELEMENTS // max(1, self.image_emb.shape[1]))
        dimension = self.image_emb.shape[1]
        epsilon = torch.finfo(self.image_emb.dtype).eps if self.image_emb.is_floating_point() else 0
        for start in range(0, self.n_captions, step):
            image = self.image_emb[caption_image[start : start + step]]
            text = self.text_emb[start : start + step]
            product = (image * text).sum(1)
            magnitude = image.norm(dim=1) * text.norm(dim=1)
            if self.similarity == "neg_euclidean":
                sq_image = self.image_sq[caption_image[start : start + step]]
                sq_text = self.text_sq[start : start + step]
                product = 2 * product - sq_image - sq_text
                magnitude = 2 * magnitude + sq_image + sq_text
            values.append(product)
            if len(magnitude):
                tolerance = max(tolerance, float(magnitude.max()))
        # A generous multiple of the typical rounding of a length-d dot product.
        tolerance = 8 * math.sqrt(dimension) * float(epsilon) * tolerance
        return torch.cat(values), tolerance


def score_source(
    scores: np.ndarray | torch.Tensor | BlockFunction,
    n_captions: int,
    device: torch.device | str | None,
    n_images: int | None,
) -> ScoreSource:
    """The source of a stored matrix, or of a block function ``f(start, stop)`` (which cannot
    report its row count, hence ``n_images``)."""
    if callable(scores) and not isinstance(scores, np.ndarray | torch.Tensor):
        if n_images is None:
            raise ValueError("a score function needs n_images")
        return BlockFunctionSource(scores, n_images, n_captions, device_for(None, device))
    matrix = scores if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return MatrixSource(matrix, device_for(matrix, device))


def default_chunk(n_images: int, device: torch.device) -> int:
    """Caption columns per block: about 2^20 scores on CPU (cache-sized), 2^26 on CUDA."""
    target = CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS
    return max(16, target // max(1, n_images))
