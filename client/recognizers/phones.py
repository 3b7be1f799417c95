"""Phone numbers: written forms, a number after a phone keyword, and any number that `phonenumbers` (Google's
libphonenumber metadata, every region) accepts as a valid national or international number.

The last needs no format seen before ("0612 345 67 89", "81 234 567", "44-12-90-31"): a run of 7 to 15 digits
in groups is a phone when some region's numbering plan says it is a valid number. With a phone word within 32
characters before it ("reach me on", "mobile", "call") the score is high; without one it is moderate, since a
long digit run that a numbering plan accepts is an identifier of some kind in any case.
"""

from __future__ import annotations

import re
from functools import cache

import phonenumbers
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from client.recognizers.pattern import RegexRecognizer, _keyword

# A candidate: digits in groups (spaces, dots, dashes, brackets, a slash after an area code: "06-30/123 4567"),
# 7 to 15 digits (E.164's maximum).
_CANDIDATE = re.compile(
    r"(?<![\w+\-/.])(?:\+|00)?\(?\d[\d()\s.\-]{0,6}(?:/[\d()\s.\-]{0,4}\d)?[\d()\s.\-]{3,20}\d(?![\w\-/]|\.\d)"
)
# An amount ("1 200 000", "12.50") is not a phone number without a phone word before it; an amount never
# starts with a 0, a number dialled inside its country almost always does ("030 345 582").
_AMOUNT = re.compile(r"[1-9]\d{0,2}(?:[ ,.]\d{3})+(?:\.\d{1,2})?|.*\.\d{2}")
# A number in its national form: the trunk prefix 0, then at least 9 digits in 3 or more groups ("0612 345 67
# 89", "06-80/235 3037"). Whether or not a numbering plan knows the exact range, no date, dose or amount has
# this shape.
_NATIONAL = re.compile(r"\(?0\d{1,4}\)?(?:[ \-./]{1,2}\d{2,4}){2,4}")
_PHONE_CUE = re.compile(
    r"(?i:\b(?:phone|tel|telephone|fax|cell|mobile|mob|call|ring|text|sms|whatsapp|reach|contact|number|"
    r"nr|no|pager|landline|hotline|helpline|dial|numéro|telefon|puhelin|tlf)\b)"
)
# Regions tried for a number written without its country code, most populous numbering plans first.
_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS, key=lambda r: (r not in {"US", "GB", "DE", "FR", "IN"}, r))


@cache
def _valid_somewhere(digits: str) -> bool:
    """`digits` (with a leading + for an international number) is a valid number in some region's plan."""
    try:
        if digits.startswith("+"):
            return bool(phonenumbers.is_valid_number(phonenumbers.parse(digits, None)))
        for region in _REGIONS:
            if phonenumbers.is_valid_number(phonenumbers.parse(digits, region)):
                return True
    except phonenumbers.NumberParseException:
        return False
    return False


# An extension dialled after the number: "x4567", "ext. 22", "extension 301", "#12".
_EXTENSION = re.compile(r"[ \t]*(?:,[ \t]*)?(?i:x|ext\.?|extn\.?|extension|#)[ \t]*\d{1,6}(?!\w)")


def phone_extent(text: str, start: int, end: int) -> tuple[int, int]:
    """A phone number found at `[start, end)` widened over the extension written after it."""
    m = _EXTENSION.match(text, end)
    return start, (m.end() if m else end)


class PhoneNumberRecognizer(EntityRecognizer):
    """Digit groups that some region's numbering plan accepts, scored higher after a phone word."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PHONE_NUMBER"], name="SiloPhoneAnyRegion")

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out = []
        for m in _CANDIDATE.finditer(text):
            raw = m.group()
            digits = re.sub(r"\D", "", raw)
            if not 7 <= len(digits) <= 15 or not re.search(r"[\s./\-()]", raw) and not raw.startswith("+"):
                continue  # an ungrouped digit run is an account or record number, left to those recognizers
            number = "+" + digits[2:] if raw.startswith("00") else ("+" + digits if raw.startswith("+") else digits)
            if not _valid_somewhere(number) and not (len(digits) >= 9 and _NATIONAL.fullmatch(raw)):
                continue
            cue = _PHONE_CUE.search(text, max(0, m.start() - 32), m.start())
            if not cue and _AMOUNT.fullmatch(raw):
                continue
            out.append(RecognizerResult("PHONE_NUMBER", m.start(), m.end(), 0.85 if cue else 0.6))
        return out


def phone_recognizers() -> list[EntityRecognizer]:
    return [
        RegexRecognizer(
            "PHONE_NUMBER",
            [
                (
                    re.compile(r"(?<![\w+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?!\d)"),
                    0.75,
                ),
                (re.compile(r"(?<![\w+])\+\d{1,3}[\s.\-]?\(?\d{1,4}\)?(?:[\s.\-]?\d{2,4}){2,5}(?!\d)"), 0.75),
                _keyword(
                    r"phone|tel|telephone|fax|cell|mobile|call|pager|ext",
                    r"(?P<v>\+?[\d(][\d()\s.\-]{6,18}\d)",
                    0.85,
                ),
            ],
        ),
        PhoneNumberRecognizer(),
    ]
