"""What a validation score was measured on: how many validation images, out of how many, and by
which protocol. Two scores are comparable only when their scopes are alike: an R-sum on 250
images ranks each caption among 250 images, one on the whole split among all of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ValidationScope:
    """``images`` of the validation split's ``split_images`` were scored (the first ones, as
    ``max_images`` asked; 0 asks for all) with ``protocol``."""

    images: int
    split_images: int
    max_images: int
    protocol: str

    def alike(self, other: ValidationScope) -> bool:
        """Whether a score in ``other`` is measured the same way as one in this scope (the cap
        asked for does not matter once both scored the same images)."""
        return (self.images, self.split_images, self.protocol) == (
            other.images,
            other.split_images,
            other.protocol,
        )

    def describe(self) -> str:
        if self.images == self.split_images:
            return f"{self.protocol} on all {self.split_images} images"
        return f"{self.protocol} on {self.images} of {self.split_images} images"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ValidationScope | None:
        """The scope stored as ``text``; None for rows stored before scopes were recorded."""
        if not isinstance(text, str) or not text:
            return None
        return cls(**json.loads(text))
