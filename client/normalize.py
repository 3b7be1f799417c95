"""Unicode normalisation before recognition, with a map back to the original characters.

Ordinary Unicode hides identifiers from pattern recognizers: `j\u200bohn@example.com` (zero-width
space), `555\u2011123\u20114567` (non-breaking hyphens), `５５５－１２３－４５６７` (full-width), a card number
with no-break spaces, an email with Cyrillic look-alike letters. `normalize` folds all of these onto the
plain text the recognizers know:

- NFKC (full-width and compatibility forms, ligatures, composed accents);
- format characters (Unicode category Cf: zero-width spaces and joiners, soft hyphens, bidi controls, tags),
  other default-ignorable characters and control characters removed;
- every dash (category Pd, minus signs) to `-` (an em dash or horizontal bar only beside a digit: elsewhere
  it stays `—`, which recognizers read as punctuation, as in a signature line), every space (Zs) to ` `,
  line separators to a newline, every decimal digit to its ASCII digit;
- Cyrillic, Greek and Armenian letters that look like Latin ones to those Latin letters.

The scrubber recognises on the normalised text and replaces the ORIGINAL characters: `Normalized.span`
maps a normalised span back to the original span that produced it, so an inserted invisible character,
a composed accent or an expanded ligature is covered whole, and no fragment of an identifier survives.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from bisect import bisect_right
from functools import lru_cache

# Text made only of these needs no folding at all: the common case, checked by one C-level regex pass.
_PLAIN = re.compile(r"[\t\n\r\x20-\x7e]+")

# Latin look-alikes (Unicode confusables, Cyrillic, Greek and Armenian) of letters identifiers are made of.
HOMOGLYPHS: dict[str, str] = {
    **dict(zip("аеорсухіјѕԁԛԝһӏүɡɑı", "aeopcyxijsdqwhlygai", strict=True)),  # Cyrillic and Latin lower case
    **dict(zip("АВЕКМНОРСТХУІЈЅԚԜӀҮ", "ABEKMHOPCTXYIJSQWIY", strict=True)),  # Cyrillic upper case
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧϹͿ", "ABEZHIKMNOPTYXCJ", strict=True)),  # Greek upper case
    **dict(zip("αορικνυχϲϳ", "aopikvuxcj", strict=True)),  # Greek lower case
    **dict(zip("օսհո", "ouhn", strict=True)),  # Armenian
}
# Dash-like characters outside category Pd, and full stops that domain names accept (IDNA).
_EXTRA: dict[str, str] = {"\u2212": "-", "\u2043": "-", "\u02d7": "-", "\u2796": "-", "\u3002": ".", "\x85": "\n"}
# Default-ignorable characters that are not in category Cf (combining grapheme joiner, variation selectors,
# Hangul fillers, Khmer inherent vowels, Mongolian variation selectors): invisible, so removed too.
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")


def _fold_char(ch: str) -> str:
    mapped = HOMOGLYPHS.get(ch) or _EXTRA.get(ch)
    if mapped is not None:
        return mapped
    category = unicodedata.category(ch)
    if category == "Cf" or _IGNORABLE.match(ch):
        return ""
    if category == "Cc":
        return ch if ch in "\t\n\r" else " " if ch.isspace() else ""
    if category == "Zs":
        return " "
    if category in ("Zl", "Zp"):
        return "\n"
    if category == "Pd":
        return "-"
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    return ch


@lru_cache(maxsize=8192)
def fold(cluster: str) -> str:
    """One character with its combining marks, NFKC-normalised and folded (possibly to nothing)."""
    # Look-alikes first as well: NFKC turns some into letters that look like nothing Latin (lunate sigma: Σ).
    latin = "".join(HOMOGLYPHS.get(ch, ch) for ch in cluster)
    return "".join(_fold_char(ch) for ch in unicodedata.normalize("NFKC", latin))


class Normalized:
    """Normalised text and the map back to the original. The map is piecewise: a segment is either a run of
    characters that each come from one original character (`_end` -1), or the characters one original
    cluster expanded to (`_end` its original end). Removed characters belong to no segment."""

    __slots__ = ("text", "_end", "_norm", "_orig")

    def __init__(self, text: str, norm: array | None = None, orig: array | None = None, end: array | None = None):
        self.text = text
        self._norm, self._orig, self._end = norm, orig, end

    @property
    def identity(self) -> bool:
        return self._norm is None

    def _segment(self, i: int) -> int:
        assert self._norm is not None
        return bisect_right(self._norm, i) - 1

    def start(self, i: int) -> int:
        """Original index where the character that produced normalised character `i` starts."""
        if self._norm is None or self._orig is None or self._end is None:
            return i
        k = self._segment(i)
        return self._orig[k] + (i - self._norm[k]) if self._end[k] < 0 else self._orig[k]

    def end(self, i: int) -> int:
        """Original index just after the character that produced normalised character `i`."""
        if self._norm is None or self._orig is None or self._end is None:
            return i + 1
        k = self._segment(i)
        return self._orig[k] + (i - self._norm[k]) + 1 if self._end[k] < 0 else self._end[k]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span that produced normalised `[start, end)` (non-empty), invisible characters inside
        it included."""
        return self.start(start), self.end(end - 1)


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.norm, self.orig, self.end = array("q"), array("q"), array("q")
        self.linear_until = -1  # original index where the open one-to-one segment would continue; -1: none

    def one_to_one(self, orig: int, piece: str) -> None:
        if orig != self.linear_until:
            self.norm.append(self.size)
            self.orig.append(orig)
            self.end.append(-1)
        self.parts.append(piece)
        self.size += len(piece)
        self.linear_until = orig + len(piece)

    def cluster(self, orig: int, stop: int, piece: str) -> None:
        if len(piece) == 1 and stop - orig == 1:
            self.one_to_one(orig, piece)
            return
        self.linear_until = -1
        if piece:
            self.norm.append(self.size)
            self.orig.append(orig)
            self.end.append(stop)
            self.parts.append(piece)
            self.size += len(piece)


# Dashes that are punctuation between words ("— Makinde" signs a letter) and separators between digits.
_WIDE_DASHES = frozenset("\u2014\u2015")
# How far to look past invisible characters for the digit that makes a wide dash a separator.
_DIGIT_REACH = 4


def _visible_neighbours_digit(text: str, start: int, stop: int) -> bool:
    before = next((fold(text[i]) for i in range(start - 1, max(start - 1 - _DIGIT_REACH, -1), -1) if fold(text[i])), "")
    after = next((fold(text[i]) for i in range(stop, min(stop + _DIGIT_REACH, len(text))) if fold(text[i])), "")
    return before[-1:].isdigit() or after[:1].isdigit()


def normalize(text: str) -> Normalized:
    """`text` folded for recognition (see the module docstring), with its map back. Linear in `len(text)`."""
    if not text or _PLAIN.fullmatch(text):
        return Normalized(text)
    out = _Builder()
    pos, n = 0, len(text)
    while pos < n:
        m = _PLAIN.match(text, pos)
        if m:
            stop = m.end()
            if stop < n and unicodedata.combining(text[stop]):
                stop -= 1  # the last plain character is the base of the combining marks after it
            if stop > pos:
                out.one_to_one(pos, text[pos:stop])
                pos = stop
            if pos >= n:
                break
        stop = pos + 1
        while stop < n and unicodedata.combining(text[stop]):
            stop += 1
        piece = fold(text[pos:stop])
        if text[pos] in _WIDE_DASHES and not _visible_neighbours_digit(text, pos, stop):
            piece = "\u2014"
        out.cluster(pos, stop, piece)
        pos = stop
    return Normalized("".join(out.parts), out.norm, out.orig, out.end)


def normalized_text(text: str) -> str:
    return normalize(text).text
