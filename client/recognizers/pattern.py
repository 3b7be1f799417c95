"""`RegexRecognizer`: one entity type from compiled patterns, and the "keyword + value" pattern builder."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from functools import cache

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

Validator = Callable[[str], bool]


_MAXREPEAT = 2**32  # stands for an unbounded repeat in the parsed pattern; only compared, never counted to


def _first_chars(items: list, ignorecase: bool) -> tuple[set[str], bool] | None:  # type: ignore[type-arg]
    """The characters a match of the parsed pattern `items` can start with, as character-class pieces, and
    whether it can match the empty string; None when that is not known (any character, a negated class)."""
    out: set[str] = set()
    for op, arg in items:
        name = str(op)
        if name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue  # zero-width: the first character is the next item's
        if name == "LITERAL":
            ch = chr(arg)
            out.update({ch, ch.swapcase()} if ignorecase else {ch})
            return out, False
        if name == "IN":
            for item_op, item in arg:
                kind = str(item_op)
                if kind == "LITERAL":
                    ch = chr(item)
                    out.update({ch, ch.swapcase()} if ignorecase else {ch})
                elif kind == "RANGE":
                    lo, hi = chr(item[0]), chr(item[1])
                    out.add(f"{re.escape(lo)}-{re.escape(hi)}")
                    if ignorecase and (lo + hi).isascii() and (lo + hi).isalpha():
                        out.add(f"{lo.swapcase()}-{hi.swapcase()}")
                    elif ignorecase:
                        return None
                elif kind == "CATEGORY" and str(item) in ("CATEGORY_DIGIT", "CATEGORY_SPACE"):
                    out.add(r"\d" if str(item) == "CATEGORY_DIGIT" else r"\s")
                else:
                    return None
            return out, False
        if name == "SUBPATTERN":
            _group, add, remove, sub = arg
            inner = _first_chars(sub, (ignorecase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE)
        elif name == "BRANCH":
            inner = (set(), False)
            for alt in arg[1]:
                first = _first_chars(alt, ignorecase)
                if first is None:
                    return None
                inner = (inner[0] | first[0], inner[1] or first[1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            first = _first_chars(sub, ignorecase)
            inner = None if first is None else (first[0], first[1] or low == 0)
        else:
            return None
        if inner is None:
            return None
        out |= inner[0]
        if not inner[1]:
            return out, False
    return out, True


@cache
def gated(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """`pattern` led by a lookahead on the characters a match can start with: the same matches, found faster
    (Python's engine tries a pattern that starts with `\b` or an alternation at every position, a character
    class it scans for). Unchanged when those characters are not known."""
    if re.match(r"\(\?[aiLmsux]+\)", pattern.pattern):
        return pattern  # global inline flags must stay first
    parser = importlib.import_module("re._parser")  # the standard library's own pattern parser
    first = _first_chars(list(parser.parse(pattern.pattern, pattern.flags)), bool(pattern.flags & re.IGNORECASE))
    if first is None or first[1] or not first[0]:
        return pattern
    pieces = sorted(first[0])
    # Ranges and categories are written already ("A-Z", "\\d"); single characters are escaped here.
    cls = "".join(p if len(p) > 1 and ("-" in p[1:] or p.startswith("\\")) else re.escape(p) for p in pieces)
    return re.compile(f"(?=[{cls}]){pattern.pattern}", pattern.flags)


class RegexRecognizer(EntityRecognizer):
    """One entity type from compiled patterns. A named group `v` marks the value inside a longer match
    (the keyword before it stays); without it the whole match is the value."""

    def __init__(
        self,
        entity: str,
        patterns: Sequence[tuple[re.Pattern[str], float]],
        *,
        validate: Validator | None = None,
        name: str | None = None,
    ) -> None:
        self._patterns = tuple((gated(p), score) for p, score in patterns)
        self._validate = validate
        super().__init__(supported_entities=[entity], name=name or f"Silo{entity.title().replace('_', '')}")

    def load(self) -> None:  # patterns are compiled at import
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        entity = self.supported_entities[0]
        out = []
        for pattern, score in self._patterns:
            group = "v" if "v" in pattern.groupindex else 0
            for m in pattern.finditer(text):
                start, end = m.span(group)
                if start < 0 or (self._validate and not self._validate(text[start:end])):
                    continue
                out.append(RecognizerResult(entity, start, end, score))
        return out


_I = re.IGNORECASE
# Between a keyword and its value: "MRN: 123", "member ID # 123", "account no. 123", "policy number is 1".
# Case-blind like the keyword: "Policy Number: 654321", "Claim NO. 4567".
_SEP = r"(?i:\s*(?:[:#,]|no\.?|nos\.?|number|num\.?|nr\.?|ID|is|was|of|ending(?:\s+in)?)\s*){0,4}\s*"
# An identifier value: upper-case letters, digits, dashes and slashes ("2023/AB/456"), at least one digit,
# 4 to 24 characters.
_IDV = r"(?P<v>(?=[A-Z0-9\-/]*\d)[A-Z0-9][A-Z0-9\-/]{2,22}[A-Z0-9])(?![\w\-/])"


def _keyword(words: str, value: str = _IDV, score: float = 0.85) -> tuple[re.Pattern[str], float]:
    return re.compile(rf"(?i:\b(?:{words}))\b{_SEP}{value}"), score
