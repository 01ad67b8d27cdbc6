"""The default ``synthetic`` dataset: seeded scenes of coloured shapes with phrase boxes.

Everything is written in the formats of the public datasets so that the default run goes
through the same loaders as real data:

- ``images/<id>.jpg`` (JPEG);
- ``dataset_synthetic.json``: Karpathy-style captions and splits (image root ``images/``);
- ``Sentences/<id>.txt``: Flickr30K Entities phrase markup, one caption per line, in the
  JSON's order; the markup-stripped line equals the JSON ``raw`` caption;
- ``Annotations/<id>.xml``: Flickr30K Entities PASCAL-VOC-like boxes (1-based, inclusive).

Chain ids are per image: shape ``k`` (0-based) is chain ``k + 1``, the background is chain
``n_shapes + 1``, phrases about several shapes ("two red shapes") get the next ids and every
member's ``<object>`` lists them as extra ``<name>``s, as real annotations do.

Each image draws from its own generator seeded by ``(seed, index)``, so the output is the
same byte for byte for a given seed (JPEG bytes for a given Pillow version).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FORMAT_VERSION = 1
DATASET_NAME = "synthetic"
JSON_NAME = f"dataset_{DATASET_NAME}.json"
GENERATION_NAME = "generation.json"
JPEG_QUALITY = 90

SHAPE_TYPE = "shapes"
GROUP_TYPE = "other"
SCENE_TYPE = "scene"
NOTVISUAL_TYPE = "notvisual"
SYNTHETIC_ENTITY_TYPES: tuple[str, ...] = (SHAPE_TYPE, GROUP_TYPE, SCENE_TYPE, NOTVISUAL_TYPE)

SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (35, 75, 220),
    "yellow": (245, 220, 30),
    "purple": (140, 50, 180),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (232, 232, 232),
    "black": (22, 22, 22),
    "pink": (245, 175, 200),
    "brown": (115, 75, 40),
    "teal": (0, 120, 125),
    "beige": (225, 205, 160),
    "navy": (25, 35, 95),
    "light blue": (150, 195, 235),
}
BACKGROUND_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"gray": ("gray", "grey")}
# Texture name -> adjectives a caption may use for it.
BACKGROUND_TEXTURES: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "solid"),
    "grainy": ("grainy", "speckled"),
    "shaded": ("shaded",),
}
# Shapes are drawn only on backgrounds at least this far away in RGB, so colour words stay
# true after texture, JPEG and resizing.
MIN_CONTRAST = 150.0
_TEXTURE_NOISE_SIGMA = 8.0
_TEXTURE_NOISE_LIMIT = 24
_TEXTURE_GRADIENT = 20

# kind -> (singular words, plural words), synonyms in parallel.
SHAPE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "circle": (("circle", "disc"), ("circles", "discs")),
    "square": (("square", "box"), ("squares", "boxes")),
    "triangle": (("triangle",), ("triangles",)),
    "star": (("star",), ("stars",)),
    "cross": (("cross", "plus sign"), ("crosses", "plus signs")),
    "diamond": (("diamond", "rhombus"), ("diamonds", "rhombuses")),
    "oval": (("oval", "ellipse"), ("ovals", "ellipses")),
}
SIZE_CLASSES = ("small", "medium", "large")
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium", "medium sized"),
    "large": ("large", "big"),
}
# Extent of the shape's longer side as a fraction of the image side; the classes are
# separated so that size words stay meaningful.
SIZE_FRACTIONS: dict[str, tuple[float, float]] = {
    "small": (0.17, 0.22),
    "medium": (0.28, 0.34),
    "large": (0.40, 0.47),
}
# (row, column) of a 3x3 grid -> locative phrases; each reads well followed by "of ...".
POSITION_WORDS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the top left corner", "at the top left"),
    (0, 1): ("at the top",),
    (0, 2): ("in the top right corner", "at the top right"),
    (1, 0): ("on the left side", "on the left"),
    (1, 1): ("in the centre", "in the middle"),
    (1, 2): ("on the right side", "on the right"),
    (2, 0): ("in the bottom left corner", "at the bottom left"),
    (2, 1): ("at the bottom",),
    (2, 2): ("in the bottom right corner", "at the bottom right"),
}
NUMBER_WORDS = {2: "two", 3: "three"}
_BOX_GAP = 2  # empty pixels required between two shapes' boxes
_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    cell: tuple[int, int]
    draw_ops: tuple[tuple[str, tuple[int, ...]], ...]
    box: tuple[int, int, int, int]  # 0-based pixels, exclusive right/bottom (tables contract)


@dataclass(frozen=True)
class Scene:
    image_size: int
    background: str
    texture: str
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class Phrase:
    text: str
    chain: int
    entity_type: str


Segment = str | Phrase


@dataclass
class SyntheticSummary:
    out_dir: Path
    counts: dict[str, int]
    n_captions: int
    n_phrases: int
    seconds: float
    reused: bool = False


@dataclass
class SceneCaptions:
    """The captions of one image and the chains they use (groups: members -> chain)."""

    captions: list[list[Segment]]
    groups: dict[tuple[int, ...], int] = field(default_factory=dict)
    used_chains: set[int] = field(default_factory=set)


# --------------------------------------------------------------------------- scenes


def _allowed_colours(background: str) -> list[str]:
    base = np.array(BACKGROUND_COLOURS[background], dtype=float)
    return [
        name
        for name, rgb in SHAPE_COLOURS.items()
        if np.linalg.norm(np.array(rgb, dtype=float) - base) >= MIN_CONTRAST
    ]


_ALLOWED_COLOURS = {background: _allowed_colours(background) for background in BACKGROUND_COLOURS}


def _draw_ops(
    kind: str, cx: int, cy: int, extent: int, vertical: bool
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    half = extent // 2
    x0, y0 = cx - half, cy - half
    x1, y1 = x0 + extent - 1, y0 + extent - 1
    if kind == "circle":
        return (("ellipse", (x0, y0, x1, y1)),)
    if kind == "square":
        side = max(4, round(extent * 0.85))
        sx0, sy0 = cx - side // 2, cy - side // 2
        return (("rectangle", (sx0, sy0, sx0 + side - 1, sy0 + side - 1)),)
    if kind == "oval":
        short = max(4, round(extent * 0.6))
        if vertical:
            ox0 = cx - short // 2
            return (("ellipse", (ox0, y0, ox0 + short - 1, y1)),)
        oy0 = cy - short // 2
        return (("ellipse", (x0, oy0, x1, oy0 + short - 1)),)
    if kind == "triangle":
        height = max(4, round(extent * 0.87))
        ty0 = cy - height // 2
        ty1 = ty0 + height - 1
        return (("polygon", (cx, ty0, x1, ty1, x0, ty1)),)
    if kind == "diamond":
        half_width = max(2, round(extent * 0.4))
        return (("polygon", (cx, y0, cx + half_width, cy, cx, y1, cx - half_width, cy)),)
    if kind == "star":
        outer = extent / 2.0
        inner = outer * 0.45
        # The star's points span less below its centre than above; shift it to centre the box.
        shift = outer * (1 - np.cos(np.pi / 5)) / 2
        points: list[int] = []
        for k in range(10):
            radius = outer if k % 2 == 0 else inner
            angle = -np.pi / 2 + k * np.pi / 5
            points += [
                round(cx + radius * np.cos(angle)),
                round(cy + shift + radius * np.sin(angle)),
            ]
        return (("polygon", tuple(points)),)
    if kind == "cross":
        thickness = max(3, round(extent * 0.34))
        t0 = cx - thickness // 2
        u0 = cy - thickness // 2
        return (
            ("rectangle", (x0, u0, x1, u0 + thickness - 1)),
            ("rectangle", (t0, y0, t0 + thickness - 1, y1)),
        )
    raise ValueError(f"unknown shape kind {kind!r}")


def _apply_ops(
    draw: ImageDraw.ImageDraw, ops: tuple[tuple[str, tuple[int, ...]], ...], fill: object
) -> None:
    for op, coords in ops:
        if op == "ellipse":
            draw.ellipse(coords, fill=fill)
        elif op == "rectangle":
            draw.rectangle(coords, fill=fill)
        else:
            draw.polygon(coords, fill=fill)


def _rendered_box(ops, image_size: int) -> tuple[int, int, int, int] | None:
    """The box of the pixels the shape actually covers; None when it would touch the border."""
    mask = Image.new("L", (image_size, image_size), 0)
    _apply_ops(ImageDraw.Draw(mask), ops, 255)
    box = mask.getbbox()
    if box is None or box[0] == 0 or box[1] == 0:
        return None
    if box[2] >= image_size or box[3] >= image_size:
        return None
    return box


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return (
        a[2] + _BOX_GAP <= b[0]
        or b[2] + _BOX_GAP <= a[0]
        or a[3] + _BOX_GAP <= b[1]
        or b[3] + _BOX_GAP <= a[1]
    )


_Placement = tuple[
    tuple[int, int], tuple[tuple[str, tuple[int, ...]], ...], tuple[int, int, int, int]
]


def _place(
    rng: np.random.Generator, kinds: list[str], sizes: list[str], image_size: int
) -> list[_Placement] | None:
    """Put the shapes in distinct grid cells without overlap; None if this draw failed."""
    cells = rng.choice(9, size=len(kinds), replace=False)
    third = image_size / 3.0
    placed: list[_Placement] = []
    for kind, size, cell in zip(kinds, sizes, cells, strict=True):
        row, col = divmod(int(cell), 3)
        low, high = SIZE_FRACTIONS[size]
        extent = max(6, round(image_size * rng.uniform(low, high)))
        # Jitter stays inside the cell's third, so position words remain true.
        jitter = third / 4.0
        cx = (col + 0.5) * third + rng.uniform(-jitter, jitter)
        cy = (row + 0.5) * third + rng.uniform(-jitter, jitter)
        margin = extent // 2 + 2
        cx = int(round(min(max(cx, margin), image_size - 1 - margin)))
        cy = int(round(min(max(cy, margin), image_size - 1 - margin)))
        ops = _draw_ops(kind, cx, cy, extent, vertical=bool(rng.random() < 0.5))
        box = _rendered_box(ops, image_size)
        if box is None or any(not _separated(box, other[2]) for other in placed):
            return None
        placed.append(((row, col), ops, box))
    return placed


def sample_scene(seed: int, index: int, image_size: int) -> Scene:
    """The scene of image ``index`` (0-based) for ``seed``; pure function of its arguments."""
    rng = np.random.default_rng([seed, index, 0])
    n_shapes = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    background = str(rng.choice(list(BACKGROUND_COLOURS)))
    texture = str(rng.choice(list(BACKGROUND_TEXTURES)))
    allowed = _ALLOWED_COLOURS[background]
    kinds: list[str] = []
    colours: list[str] = []
    while len(kinds) < n_shapes:
        kind, colour = str(rng.choice(list(SHAPE_WORDS))), str(rng.choice(allowed))
        # (colour, kind) is unique in a scene so that "the red circle" names one shape.
        if (kind, colour) not in zip(kinds, colours, strict=True):
            kinds.append(kind)
            colours.append(colour)
    sizes = [str(rng.choice(SIZE_CLASSES)) for _ in range(n_shapes)]
    for attempt in range(_PLACEMENT_TRIES):
        if attempt and attempt % 25 == 0:
            # Crowded draw: shrink the largest shape by one class and try again.
            largest = max(range(n_shapes), key=lambda k: SIZE_CLASSES.index(sizes[k]))
            sizes[largest] = SIZE_CLASSES[max(0, SIZE_CLASSES.index(sizes[largest]) - 1)]
        placed = _place(rng, kinds, sizes, image_size)
        if placed is not None:
            shapes = tuple(
                Shape(kind, colour, size, cell, ops, box)
                for kind, colour, size, (cell, ops, box) in zip(
                    kinds, colours, sizes, placed, strict=True
                )
            )
            return Scene(image_size, background, texture, shapes)
    raise RuntimeError(f"could not place shapes for image {index} (seed {seed})")


def render_scene(scene: Scene, seed: int, index: int) -> Image.Image:
    """The scene as an RGB image (before JPEG compression)."""
    size = scene.image_size
    base = BACKGROUND_COLOURS[scene.background]
    if scene.texture == "plain":
        image = Image.new("RGB", (size, size), base)
    else:
        pixels = np.empty((size, size, 3), dtype=np.int16)
        pixels[:] = base
        if scene.texture == "grainy":
            rng = np.random.default_rng([seed, index, 2])
            grain = rng.normal(0.0, _TEXTURE_NOISE_SIGMA, size=(size, size, 1))
            pixels += np.clip(grain, -_TEXTURE_NOISE_LIMIT, _TEXTURE_NOISE_LIMIT).astype(np.int16)
        else:
            ramp = np.linspace(-_TEXTURE_GRADIENT, _TEXTURE_GRADIENT, size).round()
            pixels += ramp.astype(np.int16)[:, None, None]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _apply_ops(draw, shape.draw_ops, SHAPE_COLOURS[shape.colour])
    return image


# ------------------------------------------------------------------------- captions


def _article(next_word: str) -> str:
    return "an" if next_word[:1] in "aeiou" else "a"


def _join(items: list[list[Segment]]) -> list[Segment]:
    """``X`` / ``X and Y`` / ``X , Y and Z``."""
    joined: list[Segment] = []
    for position, item in enumerate(items):
        if position == len(items) - 1 and position > 0:
            joined.append("and")
        elif position > 0:
            joined.append(",")
        joined.extend(item)
    return joined


class _Describer:
    """Builds the captions of one scene; every phrase is marked with its chain."""

    def __init__(self, scene: Scene, rng: np.random.Generator) -> None:
        self.scene = scene
        self.rng = rng
        self.n = len(scene.shapes)
        self.groups: dict[tuple[int, ...], int] = {}
        self.used: set[int] = set()

    # -- phrases

    def _pick(self, options) -> str:
        return str(options[int(self.rng.integers(len(options)))])

    def _kind_unique(self, index: int) -> bool:
        kind = self.scene.shapes[index].kind
        return sum(shape.kind == kind for shape in self.scene.shapes) == 1

    def shape(
        self,
        index: int,
        determiner: str = "a",
        size_p: float = 0.6,
        colour: bool | None = None,
        noun: str | None = None,
    ) -> Phrase:
        shape = self.scene.shapes[index]
        if colour is None:
            # Dropping the colour is only allowed when the kind alone names the shape.
            colour = not (self._kind_unique(index) and self.rng.random() < 0.15)
        words: list[str] = []
        if self.rng.random() < size_p:
            words.append(self._pick(SIZE_WORDS[shape.size]))
        if colour:
            words.append(shape.colour)
        words.append(noun if noun is not None else self._pick(SHAPE_WORDS[shape.kind][0]))
        if determiner == "a":
            determiner = _article(words[0])
        chain = index + 1
        self.used.add(chain)
        return Phrase(" ".join([determiner, *words]), chain, SHAPE_TYPE)

    def group(self, members: tuple[int, ...], words: str) -> Phrase:
        members = tuple(sorted(members))
        if members not in self.groups:
            self.groups[members] = self.n + 2 + len(self.groups)
        chain = self.groups[members]
        self.used.add(chain)
        return Phrase(words, chain, GROUP_TYPE)

    def background(self, determiner: str = "a") -> Phrase:
        words: list[str] = []
        if self.rng.random() < 0.5:
            words.append(self._pick(BACKGROUND_TEXTURES[self.scene.texture]))
        name = self.scene.background
        words.append(self._pick(BACKGROUND_COLOUR_WORDS.get(name, (name,))))
        words.append(self._pick(("background", "background", "backdrop")))
        if determiner == "a":
            determiner = _article(words[0])
        chain = self.n + 1
        self.used.add(chain)
        return Phrase(" ".join([determiner, *words]), chain, SCENE_TYPE)

    def position(self, index: int) -> str:
        return self._pick(POSITION_WORDS[self.scene.shapes[index].cell])

    def order(self) -> list[int]:
        return [int(k) for k in self.rng.permutation(self.n)]

    def all_shapes(self) -> Phrase:
        noun = self._pick(("shapes", "objects", "figures"))
        return self.group(tuple(range(self.n)), f"{NUMBER_WORDS[self.n]} {noun}")

    def _relations(self, a: int, b: int) -> list[str]:
        """Relations of shape ``a`` to shape ``b`` that hold with clear separation."""
        sa, sb = self.scene.shapes[a], self.scene.shapes[b]
        found: list[str] = []
        if sa.cell[1] < sb.cell[1] and sa.box[2] <= sb.box[0]:
            found += ["to the left of", "left of"]
        if sa.cell[1] > sb.cell[1] and sa.box[0] >= sb.box[2]:
            found += ["to the right of", "right of"]
        if sa.cell[0] < sb.cell[0] and sa.box[3] <= sb.box[1]:
            found += ["above"]
        if sa.cell[0] > sb.cell[0] and sa.box[1] >= sb.box[3]:
            found += ["below", "under"]
        if max(abs(sa.cell[0] - sb.cell[0]), abs(sa.cell[1] - sb.cell[1])) == 1:
            found += ["next to", "beside"]
        return found

    # -- templates: each returns the caption's segments, or None when it does not apply

    def t_listing(self) -> list[Segment]:
        items = [[self.shape(k, size_p=0.7, colour=True)] for k in self.order()]
        return [*_join(items), self._pick(("on", "against", "in front of")), self.background(), "."]

    def t_positions(self) -> list[Segment]:
        items = [[self.shape(k, size_p=0.4), self.position(k)] for k in self.order()]
        return [*_join(items), "."]

    def t_there(self) -> list[Segment]:
        if self.n == 1:
            if self.rng.random() < 0.5:
                return ["There is", self.shape(0), "on", self.background(), "."]
            return ["There is", self.shape(0), self.position(0), "."]
        items = [[self.shape(k, size_p=0.3)] for k in self.order()]
        return ["There are", self.all_shapes(), "on", self.background(), ":", *_join(items), "."]

    def t_relation(self) -> list[Segment] | None:
        pairs = [(a, b) for a in range(self.n) for b in range(self.n) if a != b]
        pairs = [(a, b) for a, b in pairs if self._relations(a, b)]
        if not pairs:
            return None
        a, b = pairs[int(self.rng.integers(len(pairs)))]
        relation = self._pick(self._relations(a, b))
        rest = [k for k in range(self.n) if k not in (a, b)]
        if self.rng.random() < 0.5:
            caption: list[Segment] = [
                self.shape(a, "the", 0.3),
                "is",
                relation,
                self.shape(b, "the", 0.3),
            ]
            for k in rest:
                caption += [",", "and", self.shape(k, size_p=0.3), "is", self.position(k)]
            return [*caption, "."]
        caption = [self.shape(a), relation, self.shape(b)]
        if rest:
            # A background phrase after a third shape would read as that shape's place.
            return [*caption, "and", self.shape(rest[0], size_p=0.3), self.position(rest[0]), "."]
        return [*caption, "on", self.background(), "."]

    def t_background_first(self) -> list[Segment]:
        items: list[list[Segment]] = []
        for k in self.order():
            item: list[Segment] = [self.shape(k, size_p=0.5)]
            if self.n == 1 and self.rng.random() < 0.5:
                item.append(self.position(k))
            items.append(item)
        return [self.background(), "with", *_join(items), "."]

    def t_notvisual(self) -> list[Segment]:
        noun = self._pick(("the image", "the picture", "this picture", "this image"))
        notvisual = Phrase(noun, 0, NOTVISUAL_TYPE)
        items = [[self.shape(k, size_p=0.5)] for k in self.order()]
        if self.rng.random() < 0.5:
            return [notvisual, "shows", *_join(items), "on", self.background(), "."]
        verb = "is" if self.n == 1 else "are"
        return ["In", notvisual, ",", *_join(items), verb, "drawn on", self.background(), "."]

    def t_groups(self) -> list[Segment] | None:
        if self.n < 2:
            return None
        by_colour: dict[str, list[int]] = {}
        by_kind: dict[str, list[int]] = {}
        for k, shape in enumerate(self.scene.shapes):
            by_colour.setdefault(shape.colour, []).append(k)
            by_kind.setdefault(shape.kind, []).append(k)
        if any(len(members) > 1 for members in by_colour.values()):
            items: list[list[Segment]] = []
            for colour_name, members in by_colour.items():
                if len(members) == 1:
                    items.append([self.shape(members[0], size_p=0.4, colour=True)])
                else:
                    noun = self._pick(("shapes", "objects"))
                    words = f"{NUMBER_WORDS[len(members)]} {colour_name} {noun}"
                    items.append([self.group(tuple(members), words)])
            order = [int(k) for k in self.rng.permutation(len(items))]
            return [*_join([items[k] for k in order]), "on", self.background(), "."]
        shared = [members for members in by_kind.values() if len(members) > 1]
        if not shared:
            return None
        members = shared[0]
        plural = self._pick(SHAPE_WORDS[self.scene.shapes[members[0]].kind][1])
        caption: list[Segment] = [
            self.group(tuple(members), f"{NUMBER_WORDS[len(members)]} {plural}")
        ]
        caption += [",", *_join([[self.shape(k, colour=True, noun="one")] for k in members]), ","]
        for k in range(self.n):
            if k not in members:
                caption += ["and", self.shape(k, size_p=0.4, colour=True)]
        return [*caption, "on", self.background(), "."]

    def t_sizes(self) -> list[Segment] | None:
        rank = [SIZE_CLASSES.index(shape.size) for shape in self.scene.shapes]
        pairs = [(a, b) for a in range(self.n) for b in range(self.n) if rank[a] > rank[b]]
        if not pairs:
            return None
        big, small = pairs[int(self.rng.integers(len(pairs)))]
        if self.rng.random() < 0.5:
            caption: list[Segment] = [
                self.shape(big, "the", 0.0, colour=True),
                "is",
                self._pick(("bigger than", "larger than")),
                self.shape(small, "the", 0.0, colour=True),
            ]
        else:
            caption = [
                self.shape(small, "the", 0.0, colour=True),
                "is smaller than",
                self.shape(big, "the", 0.0, colour=True),
            ]
        for k in range(self.n):
            if k not in (big, small):
                caption += [",", "and there is also", self.shape(k)]
        return [*caption, "."]

    def t_single(self) -> list[Segment] | None:
        if self.n != 1:
            return None
        if self.rng.random() < 0.5:
            return [self.shape(0), "is the only shape on", self.background(), "."]
        verb = self._pick(("sits", "is placed", "appears"))
        return [self.shape(0), verb, self.position(0), "of", self.background(), "."]

    def describe(self, count: int) -> list[list[Segment]]:
        # The listing names every shape's colour and kind and the background; it is always
        # among the captions so that together they pin the image down.
        others = [
            self.t_positions,
            self.t_there,
            self.t_relation,
            self.t_background_first,
            self.t_notvisual,
            self.t_groups,
            self.t_sizes,
            self.t_single,
        ]
        captions = [self.t_listing()]
        while len(captions) < count:
            produced = 0
            for k in self.rng.permutation(len(others)):
                if len(captions) == count:
                    break
                caption = others[int(k)]()
                if caption is not None:
                    captions.append(caption)
                    produced += 1
            if produced == 0:
                captions.append(self.t_listing())
        order = self.rng.permutation(len(captions))
        return [captions[int(k)] for k in order]


def describe_scene(scene: Scene, seed: int, index: int, count: int) -> SceneCaptions:
    describer = _Describer(scene, np.random.default_rng([seed, index, 1]))
    captions = describer.describe(count)
    return SceneCaptions(captions, groups=describer.groups, used_chains=describer.used)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def caption_texts(segments: list[Segment]) -> tuple[str, str]:
    """(plain caption, Flickr30K Entities markup line) of one caption."""
    plain: list[str] = []
    marked: list[str] = []
    for position, segment in enumerate(segments):
        if isinstance(segment, Phrase):
            text = _capitalised(segment.text) if position == 0 else segment.text
            plain.append(text)
            marked.append(f"[/EN#{segment.chain}/{segment.entity_type} {text}]")
        else:
            text = _capitalised(segment) if position == 0 else segment
            plain.append(text)
            marked.append(text)
    return " ".join(plain), " ".join(marked)


def tokenize(raw: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", raw.lower())


# ------------------------------------------------------------------------ file formats


def annotation_xml(image_id: str, scene: Scene, described: SceneCaptions) -> str:
    """Flickr30K Entities annotation: boxed objects first, then the boxless scene chain."""
    size = scene.image_size
    lines = [
        "<annotation>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<size>",
        f"\t\t<width>{size}</width>",
        f"\t\t<height>{size}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
    ]
    for index, shape in enumerate(scene.shapes):
        names = [index + 1] + [
            chain for members, chain in described.groups.items() if index in members
        ]
        names = [name for name in names if name in described.used_chains]
        if not names:
            continue
        lines.append("\t<object>")
        lines += [f"\t\t<name>{name}</name>" for name in names]
        x0, y0, x1, y1 = shape.box
        lines += [
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    scene_chain = len(scene.shapes) + 1
    if scene_chain in described.used_chains:
        lines += [
            "\t<object>",
            f"\t\t<name>{scene_chain}</name>",
            "\t\t<scene>1</scene>",
            "\t\t<nobndbox>1</nobndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines)


def image_id_for(index: int) -> str:
    return f"s{index + 1:07d}"


def _split_for(index: int, n_train: int, n_val: int) -> str:
    if index < n_train:
        return "train"
    return "val" if index < n_train + n_val else "test"


def _write_dataset(
    target: Path,
    parameters: dict[str, int],
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Write every file into ``target`` (a fresh directory); returns (captions, phrases)."""
    seed = parameters["seed"]
    image_size = parameters["image_size"]
    per_image = parameters["captions_per_image"]
    n_train, n_val = parameters["n_train"], parameters["n_val"]
    total = n_train + n_val + parameters["n_test"]
    for folder in ("images", "Sentences", "Annotations"):
        (target / folder).mkdir()
    n_captions = n_phrases = 0
    with open(target / JSON_NAME, "w", encoding="utf-8") as handle:
        handle.write('{"images": [')
        for index in range(total):
            image_id = image_id_for(index)
            scene = sample_scene(seed, index, image_size)
            render_scene(scene, seed, index).save(
                target / "images" / f"{image_id}.jpg", "JPEG", quality=JPEG_QUALITY
            )
            described = describe_scene(scene, seed, index, per_image)
            sentences = []
            marked_lines = []
            for position, segments in enumerate(described.captions):
                raw, marked = caption_texts(segments)
                sentid = index * per_image + position
                sentences.append(
                    {"tokens": tokenize(raw), "raw": raw, "imgid": index, "sentid": sentid}
                )
                marked_lines.append(marked)
                n_phrases += sum(isinstance(segment, Phrase) for segment in segments)
            n_captions += len(sentences)
            record = {
                "filename": f"{image_id}.jpg",
                "imgid": index,
                "split": _split_for(index, n_train, n_val),
                "sentids": [sentence["sentid"] for sentence in sentences],
                "sentences": sentences,
            }
            handle.write((", " if index else "") + json.dumps(record))
            (target / "Sentences" / f"{image_id}.txt").write_text(
                "".join(line + "\n" for line in marked_lines), encoding="utf-8"
            )
            (target / "Annotations" / f"{image_id}.xml").write_text(
                annotation_xml(image_id, scene, described), encoding="utf-8"
            )
            if progress is not None and ((index + 1) % 500 == 0 or index + 1 == total):
                progress(index + 1, total)
        handle.write(f'], "dataset": "{DATASET_NAME}"}}')
    return n_captions, n_phrases


def _read_generation(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / GENERATION_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _remove_stale_partials(out_dir: Path, max_age_s: float = 3600.0) -> None:
    now = time.time()
    for pattern in (f".{out_dir.name}.partial-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > max_age_s:
                    shutil.rmtree(stale)


def _summary(out_dir: Path, record: dict, seconds: float, reused: bool) -> SyntheticSummary:
    return SyntheticSummary(
        out_dir=out_dir,
        counts=dict(record["counts"]),
        n_captions=int(record["n_captions"]),
        n_phrases=int(record["n_phrases"]),
        seconds=seconds,
        reused=reused,
    )


def generate_synthetic(
    out_dir: Path,
    seed: int = 0,
    n_train: int = 5000,
    n_val: int = 1000,
    n_test: int = 1000,
    image_size: int = 128,
    captions_per_image: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSummary:
    """Write the synthetic dataset to ``out_dir``; reuse it when already complete and equal.

    The files are written into a sibling ``.<name>.partial-*`` directory that replaces
    ``out_dir`` only once complete, so ``out_dir`` is never half written.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("split sizes must be non-negative and not all zero")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be positive, got {captions_per_image}")
    parameters = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "image_size": int(image_size),
        "captions_per_image": int(captions_per_image),
    }
    existing = _read_generation(out_dir) if out_dir.exists() else None
    if existing is not None and existing.get("parameters") == parameters:
        return _summary(out_dir, existing, time.perf_counter() - started, reused=True)
    if out_dir.exists() and existing is None and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and has no {GENERATION_NAME}; "
            "refusing to replace a directory this generator did not write"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        partial.chmod(0o755)  # mkdtemp's private mode would otherwise stick to out_dir
        n_captions, n_phrases = _write_dataset(partial, parameters, progress)
        record = {
            "parameters": parameters,
            "counts": {"train": n_train, "val": n_val, "test": n_test},
            "n_captions": n_captions,
            "n_phrases": n_phrases,
            "pillow": Image.__version__,
        }
        # Written last: its presence marks the directory complete.
        (partial / GENERATION_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
        _swap_into_place(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _summary(out_dir, record, time.perf_counter() - started, reused=False)


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / "dataset")
        os.replace(partial, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(partial, out_dir)
