"""`RegexRecognizer`: one entity type from compiled patterns, and the "keyword + value" pattern builder."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

Validator = Callable[[str], bool]


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
        self._patterns = tuple(patterns)
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
