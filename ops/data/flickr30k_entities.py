"""Flickr30K Entities: phrase markup in ``Sentences/<id>.txt``, boxes in ``Annotations/<id>.xml``.

A sentence line looks like ``[/EN#114/people Some women] are standing in front of
[/EN#115/vehicles/scene a bus] .``: each bracket is a phrase of coreference chain ``114`` with
one or more types; chain ``0`` is ``notvisual``. An annotation file is PASCAL-VOC-like, with
1-based inclusive boxes; one ``<object>`` may list several ``<name>`` (chain ids) sharing its
box, and boxless chains carry ``nobndbox`` / ``scene`` flags.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import pandas as pd

from ops.data.tables import PHRASE_COLUMNS, DatasetFormatError, conform

_PHRASE_OPENING = re.compile(r"\[/EN#(\d+)((?:/[^/\s\[\]]+)+)")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ParsedPhrase:
    chain_id: str
    types: list[str]
    text: str
    first_word_index: int


@dataclass(frozen=True)
class ParsedSentence:
    text: str
    phrases: list[ParsedPhrase]


@dataclass
class ParsedAnnotation:
    width: int
    height: int
    boxes: dict[str, list[Box]] = field(default_factory=dict)
    nobndbox: set[str] = field(default_factory=set)
    scene: set[str] = field(default_factory=set)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DatasetFormatError(path, f"not valid UTF-8: {error.reason}", line=line) from None


def parse_sentence_line(line: str, path: Path, line_number: int) -> ParsedSentence:
    """Strip the markup from one line, keeping each phrase's chain, types and word position."""
    words: list[str] = []
    phrases: list[ParsedPhrase] = []
    opening: tuple[str, list[str], int] | None = None

    def fail(message: str) -> DatasetFormatError:
        return DatasetFormatError(path, message, line=line_number)

    for token in line.split():
        if token.startswith("["):
            if opening is not None:
                raise fail(f"phrase {token!r} opens inside another phrase")
            match = _PHRASE_OPENING.fullmatch(token)
            if match is None:
                raise fail(f"malformed phrase markup {token!r}")
            opening = (match.group(1), match.group(2).split("/")[1:], len(words))
            continue
        closes = token.endswith("]")
        word = token[:-1] if closes else token
        if "[" in word or "]" in word:
            raise fail(f"stray bracket in {token!r}")
        if closes and opening is None:
            raise fail(f"{token!r} closes a phrase that was never opened")
        if word:
            words.append(word)
        if closes:
            assert opening is not None
            chain_id, types, first_word_index = opening
            if len(words) == first_word_index:
                raise fail(f"empty phrase of chain {chain_id}")
            phrases.append(
                ParsedPhrase(
                    chain_id=chain_id,
                    types=types,
                    text=" ".join(words[first_word_index:]),
                    first_word_index=first_word_index,
                )
            )
            opening = None
    if opening is not None:
        raise fail(f"phrase of chain {opening[0]} is never closed")
    return ParsedSentence(text=" ".join(words), phrases=phrases)


def parse_sentence_file(path: Path) -> list[ParsedSentence]:
    """One entry per line (blank lines give an empty sentence, so indices match lines)."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [parse_sentence_line(line, path, number) for number, line in enumerate(lines, 1)]


def _parse_xml_with_lines(path: Path) -> tuple[ET.Element, dict[int, int]]:
    """Parse XML, remembering each element's start line (ElementTree does not keep it)."""
    builder = ET.TreeBuilder()
    lines: dict[int, int] = {}
    parser = expat.ParserCreate()

    def start(tag: str, attributes: dict[str, str]) -> None:
        lines[id(builder.start(tag, attributes))] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        with path.open("rb") as handle:
            parser.ParseFile(handle)
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found") from None
    except expat.ExpatError as error:
        message = f"malformed XML: {expat.ErrorString(error.code)} (column {error.offset})"
        raise DatasetFormatError(path, message, line=error.lineno) from None
    return builder.close(), lines


def _integer(path: Path, element: ET.Element | None, what: str, lines: dict[int, int]) -> int:
    if element is None:
        raise DatasetFormatError(path, f"missing <{what}>")
    text = (element.text or "").strip()
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(
            path, f"<{what}> should be an integer, got {text!r}", line=lines.get(id(element))
        ) from None


def parse_annotation_file(path: Path) -> ParsedAnnotation:
    """Image size, boxes per chain (0-based, exclusive right/bottom) and boxless chains."""
    path = Path(path)
    root, lines = _parse_xml_with_lines(path)
    if root.tag != "annotation":
        raise DatasetFormatError(path, f"root element is <{root.tag}>, expected <annotation>")
    width = _integer(path, root.find("size/width"), "width", lines)
    height = _integer(path, root.find("size/height"), "height", lines)
    if width <= 0 or height <= 0:
        raise DatasetFormatError(path, f"image size {width}x{height} is not positive")
    annotation = ParsedAnnotation(width=width, height=height)

    for number, element in enumerate(root.findall("object"), 1):
        line = lines.get(id(element))
        chain_ids = [(name.text or "").strip() for name in element.findall("name")]
        described = f"object {number} (chains {', '.join(chain_ids) or 'none'})"
        if not chain_ids or not all(chain_ids):
            raise DatasetFormatError(path, f"{described} lacks a chain id <name>", line=line)
        boxes = element.findall("bndbox")
        flags = {tag: element.find(tag) for tag in ("nobndbox", "scene")}
        if not boxes and all(flag is None for flag in flags.values()):
            raise DatasetFormatError(
                path, f"{described} has neither <bndbox> nor <nobndbox>/<scene>", line=line
            )
        for box_element in boxes:
            xmin, ymin, xmax, ymax = (
                _integer(path, box_element.find(tag), tag, lines)
                for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            box_line = lines.get(id(box_element))
            if xmax < xmin or ymax < ymin:
                raise DatasetFormatError(
                    path, f"{described}: inverted box {(xmin, ymin, xmax, ymax)}", line=box_line
                )
            if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
                raise DatasetFormatError(
                    path,
                    f"{described}: box {(xmin, ymin, xmax, ymax)} lies outside the "
                    f"{width}x{height} image",
                    line=box_line,
                )
            converted = (xmin - 1, ymin - 1, xmax, ymax)
            for chain_id in chain_ids:
                annotation.boxes.setdefault(chain_id, []).append(converted)
        for tag, flag in flags.items():
            if flag is not None and _integer(path, flag, tag, lines) > 0:
                getattr(annotation, tag).update(chain_ids)
    return annotation


def union_box(boxes: list[Box]) -> tuple[float, float, float, float]:
    """The smallest box holding all of ``boxes``; NaNs when there are none."""
    if not boxes:
        return (math.nan, math.nan, math.nan, math.nan)
    return (
        float(min(box[0] for box in boxes)),
        float(min(box[1] for box in boxes)),
        float(max(box[2] for box in boxes)),
        float(max(box[3] for box in boxes)),
    )


def load_entities_phrases(
    entities_root: Path,
    captions: pd.DataFrame,
    dataset: str,
    max_captions_per_image: int | None = None,
) -> pd.DataFrame:
    """Phrases (PHRASE_COLUMNS) of every caption, ``caption_index`` being the sentence line.

    Each image's sentence file must have exactly as many non-blank lines as the image has
    captions (blank lines are captions that were dropped as empty), or more when the captions
    were cut to ``max_captions_per_image`` and the image kept that many.
    """
    entities_root = Path(entities_root)
    columns: dict[str, list[Any]] = {name: [] for name in PHRASE_COLUMNS}
    for image_id, image_captions in captions.groupby("image_id", sort=False):
        sentence_path = entities_root / "Sentences" / f"{image_id}.txt"
        if not sentence_path.is_file():
            raise DatasetFormatError(sentence_path, f"no sentence file for image {image_id}")
        sentences = parse_sentence_file(sentence_path)
        non_blank = sum(1 for sentence in sentences if sentence.text)
        expected = non_blank
        if max_captions_per_image is not None:
            expected = min(non_blank, max_captions_per_image)
        if expected != len(image_captions):
            raise DatasetFormatError(
                sentence_path,
                f"{non_blank} sentences but image {image_id} has {len(image_captions)} captions",
            )
        annotation = parse_annotation_file(entities_root / "Annotations" / f"{image_id}.xml")
        for caption in image_captions.itertuples(index=False):
            index = int(caption.caption_index)
            if not 0 <= index < len(sentences) or not sentences[index].text:
                raise DatasetFormatError(
                    sentence_path,
                    f"caption {caption.caption_id} has no sentence on line {index + 1}",
                )
            for k, phrase in enumerate(sentences[index].phrases):
                boxes = annotation.boxes.get(phrase.chain_id, [])
                row = (
                    dataset,
                    f"{caption.caption_id}:{k}",
                    caption.caption_id,
                    str(image_id),
                    caption.split,
                    phrase.text,
                    phrase.types[0],
                    "/".join(phrase.types),
                    phrase.chain_id,
                    phrase.first_word_index,
                    *union_box(boxes),
                    len(boxes),
                )
                for name, value in zip(PHRASE_COLUMNS, row, strict=True):
                    columns[name].append(value)
    return conform(pd.DataFrame(columns), PHRASE_COLUMNS)


def entities_phrases(root: Path, image_ids: list[str]) -> pd.DataFrame:
    """Phrases of the images' sentences with their union ground-truth boxes (NaN if none)."""
    rows = []
    for image_id in image_ids:
        sentences = parse_sentence_file(root / "Sentences" / f"{image_id}.txt")
        annotation = parse_annotation_file(root / "Annotations" / f"{image_id}.xml")
        for caption_index, sentence in enumerate(sentences):
            for phrase_index, phrase in enumerate(sentence.phrases):
                rows.append(
                    (
                        f"{image_id}#{caption_index}:{phrase_index}",
                        image_id,
                        phrase.types[0],
                        "/".join(phrase.types),
                        *union_box(annotation.boxes.get(phrase.chain_id, [])),
                    )
                )
    columns = ["phrase_id", "image_id", "phrase_type", "all_types"]
    return pd.DataFrame(rows, columns=columns + ["gt_x1", "gt_y1", "gt_x2", "gt_y2"])
