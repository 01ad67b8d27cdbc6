"""The caption grammar: a scene's captions as words and phrases marked with their chains."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ops.data.synthetic.scenes import (
    BACKGROUND_TEXTURES,
    SHAPE_WORDS,
    SIZE_CLASSES,
    Scene,
)

SHAPE_TYPE = "shapes"
GROUP_TYPE = "other"
SCENE_TYPE = "scene"
NOTVISUAL_TYPE = "notvisual"

# Background colours with more than one spelling; the others are named as they are.
BACKGROUND_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"gray": ("gray", "grey")}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium", "medium sized"),
    "large": ("large", "big"),
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


@dataclass(frozen=True)
class Phrase:
    text: str
    chain: int
    entity_type: str


Segment = str | Phrase


@dataclass
class SceneCaptions:
    """The captions of one image and the chains they use (groups: members -> chain)."""

    captions: list[list[Segment]]
    groups: dict[tuple[int, ...], int] = field(default_factory=dict)
    used_chains: set[int] = field(default_factory=set)


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
