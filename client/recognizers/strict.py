"""The `strict` profile's extra recognizers: whatever still looks like an identifier, whatever its context.

Masks any remaining long digit run, any code that mixes letters and at least two digits ("Emily2023",
"AB12CD34", "clark89"), and lower-case handles joined by an underscore ("emily_clark"). Costs content
("COVID-19" in prose; a number with a unit, "70yo", "40mg", "60-year-old", "14-day", is kept), buys recall on identifiers no keyword announces.
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer

from client.recognizers.pattern import RegexRecognizer


def strict_recognizers() -> list[EntityRecognizer]:
    return [
        RegexRecognizer(
            "UNIQUE_ID",
            [
                # Five or more digits, alone or in groups: no dose, vital sign or year is that long.
                (re.compile(r"(?<![\w.,])\d{5,}(?![\w])"), 0.6),
                (re.compile(r"(?<![\w.,\-])\d{2,}(?:[ \-]\d{2,}){2,}(?![\w\-])"), 0.6),
                (
                    re.compile(
                        r"(?<![\w.\-])(?!\d+[A-Za-z]{1,4}\b)(?!\d+(?:-[A-Za-z]{2,})+(?![\w\-]))"
                        r"(?=(?:[A-Za-z._\-]*\d){2})(?=[\w.\-]*[A-Za-z])[A-Za-z0-9][\w.\-]{2,}[A-Za-z0-9]"
                    ),
                    0.6,
                ),
            ],
            name="SiloStrictCode",
        ),
        RegexRecognizer(
            "USERNAME",
            [
                (
                    re.compile(
                        r"(?<![\w.@])[A-Za-z][A-Za-z0-9]*(?:[_.][A-Za-z0-9]+)*_[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)?\b"
                    ),
                    0.6,
                )
            ],
            name="SiloStrictHandle",
        ),
    ]
