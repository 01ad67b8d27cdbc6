"""Unicode-safe word tokenizer for captions and phrases.

Rules, chosen to match the vocabularies of pretrained word vectors (GloVe, word2vec):

- NFKC normalization, then case folding; typographic apostrophes become ``'``;
- a word is a run of letters, digits and combining marks, optionally joined by inner
  hyphens or apostrophes (``t-shirt``, ``o'clock``); numbers keep inner ``.``, ``:``
  and ``,`` (``3.5``, ``9:30``, ``1,000``);
- English clitics split off as their own tokens the way the Penn Treebank (and GloVe) does:
  ``don't`` -> ``do``, ``n't``; ``dog's`` -> ``dog``, ``'s``;
- Chinese, Japanese kana and other unspaced scripts come out one character per token;
- punctuation, underscores, symbols and emoji are dropped.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0060": "'"})

# Scripts written without spaces between words: one token per character.
_UNSPACED = (
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003134f"  # CJK Extensions B-G
)
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


def _combining_mark_class() -> str:
    """Character-class body covering every Unicode combining mark (categories Mn, Mc, Me).

    Python's ``\\w`` excludes marks, which would cut Arabic, Hebrew or Devanagari words
    apart at every vowel sign.
    """
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)).startswith("M"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in ranges
    )


@functools.cache
def _token_pattern(ascii_only: bool = False) -> re.Pattern[str]:
    """The token pattern; ``ascii_only`` for ASCII text, which holds no combining mark, so the
    pattern without them matches the same and skips scanning Unicode for them (a quarter
    second: what a one-query process would otherwise spend on it)."""
    base = rf"[^\W_{_UNSPACED}]"
    if ascii_only:
        part = rf"{base}+"
    else:
        # Marks only after a base letter: a lone variation selector after an emoji is no word.
        part = rf"{base}(?:{base}|[{_combining_mark_class()}])*"
    word = rf"{part}(?:['\-]{part})*"
    number = r"\d+(?:[.:,]\d+)+"
    return re.compile(rf"{number}|{word}|[{_UNSPACED}]")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-cased word tokens (empty list for blank text)."""
    if not text:
        return []
    normalized = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    tokens: list[str] = []
    for match in _token_pattern(normalized.isascii()).finditer(normalized):
        token = match.group(0)
        clitic = _CLITIC.match(token) if "'" in token else None
        if clitic:
            tokens.extend((clitic.group(1), clitic.group(2)))
        else:
            tokens.append(token)
    return tokens
