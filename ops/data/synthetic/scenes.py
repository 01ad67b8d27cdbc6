"""Scenes of the synthetic dataset: what they may contain, how they are sampled and drawn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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
# The texture and shape tables carry their caption words too: their keys are what scenes
# draw from (in this order, so the same seed keeps the same scenes), and one table per
# kind keeps a new kind from lacking words.
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
# Extent of the shape's longer side as a fraction of the image side; the classes are
# separated so that size words stay meaningful.
SIZE_FRACTIONS: dict[str, tuple[float, float]] = {
    "small": (0.17, 0.22),
    "medium": (0.28, 0.34),
    "large": (0.40, 0.47),
}
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
