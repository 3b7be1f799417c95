"""Identifiers found by pattern: record, plan, account, licence, vehicle and device numbers after their keyword;
SSNs, ages over 89, dates, cards (Luhn), routing numbers (ABA checksum), SWIFT codes, e-mail, URLs, IPs,
and any other long code."""

from __future__ import annotations

import ipaddress
import re

import phonenumbers
from presidio_analyzer import EntityRecognizer

from client.recognizers.pattern import _I, RegexRecognizer, _keyword


def _aba_ok(v: str) -> bool:
    d = [int(c) for c in v]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def _luhn_ok(v: str) -> bool:
    digits = [int(c) for c in v if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def _age_ok(v: str) -> bool:
    return 89 < int(v) < 130


_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?|JAN|FEB|MAR|APR|MAY|JUNE?|JULY?|AUG|SEPT?|OCT|NOV|DEC)\.?"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"


def _numeric_date_ok(v: str) -> bool:
    parts = [int(p) for p in re.split(r"[/.\-]", v)]
    if len(str(parts[0])) == 4 or v[:4].isdigit():  # yyyy-mm-dd
        return 1 <= parts[1] <= 12 and 1 <= parts[2] <= 31
    a, b = parts[0], parts[1]
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


_COUNTRY_CODES = frozenset(phonenumbers.SUPPORTED_REGIONS)  # ISO 3166 alpha-2, maintained by phonenumbers


def _ip_ok(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _swift_ok(v: str) -> bool:
    return v[4:6] in _COUNTRY_CODES


def identifier_recognizers() -> list[EntityRecognizer]:
    """The offline pattern recognizers for identifiers, one per entity type."""
    ssn = r"(?P<v>(?!000|666|9\d\d)\d{3}([\- ]?)(?!00)\d{2}\2(?!0000)\d{4})(?!\d)"
    return [
        RegexRecognizer(
            "MEDICAL_RECORD_NUMBER",
            [
                _keyword(
                    r"MRN|MR|medical\s+record|med\s+rec|chart|hospital\s+(?:number|no)|patient\s+ID|"
                    r"unit\s+number|case\s+(?:number|no)"
                ),
            ],
        ),
        RegexRecognizer(
            "HEALTH_PLAN_NUMBER",
            [
                _keyword(
                    r"member|subscriber|policy|health\s+plan|insurance|insurer|Medicare|Medicaid|beneficiary|"
                    r"group|plan|MBI|HICN|coverage|payer"
                ),
            ],
        ),
        RegexRecognizer(
            "ROUTING_NUMBER",
            [
                _keyword(r"routing|ABA|RTN|transit|sort\s+code", r"(?P<v>\d{9}|\d{2}-\d{2}-\d{2})(?!\d)", 0.9),
            ],
        ),
        RegexRecognizer(
            "ACCOUNT_NUMBER",
            [
                _keyword(
                    r"account|acct\.?|acc\.?|a/c|savings|checking|chequing|deposit",
                    r"(?P<v>\d[\d\- ]{3,22}\d)(?![\w\-])",
                ),
                # The last four digits still tie a message to one account: "ending in 1234", "**** 1234".
                _keyword(
                    r"ending(?:\s+in|\s+with)?|last\s+(?:4|four)(?:\s+digits)?",
                    r"(?P<v>\d{4})(?![\w\-]|\s*(?:mg|mcg|ml|g|kg|units?|%))",
                    0.8,
                ),
                (re.compile(r"(?:[*xX•]{2,}[ \-]?){1,4}(?P<v>\d{4})(?![\w\-])"), 0.85),
            ],
        ),
        RegexRecognizer(
            "LICENSE_NUMBER",
            [
                _keyword(
                    r"licen[cs]e(?!\s+plate)|DL|driver'?s?\s+licen[cs]e|DEA|NPI|certificate|cert|permit|"
                    r"passport|registration(?!\s+plate)|board\s+cert\w*|credential"
                ),
            ],
        ),
        RegexRecognizer(
            "VEHICLE_ID",
            [
                # A VIN: 17 characters, never I, O or Q, letters and digits mixed.
                (
                    re.compile(r"\b(?=[A-HJ-NPR-Z0-9]*\d)(?=[A-HJ-NPR-Z0-9]*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}\b"),
                    0.9,
                ),
                _keyword(
                    r"(?:licen[cs]e\s+|registration\s+|number\s+)?plates?|tag|reg",
                    r"(?P<v>(?=[A-Z0-9\- ]*\d)[A-Z0-9]{1,4}[\- ]?[A-Z0-9]{2,5})(?![\w\-])",
                ),
            ],
        ),
        RegexRecognizer(
            "DEVICE_ID",
            [
                # After a device keyword a serial may be all letters: "SN-TGXEQLNW".
                _keyword(
                    r"serial|S/?N|device(?:\s+ID)?|IMEI|UDI|lot|model\s+serial|MEID|ESN|asset\s+tag",
                    r"(?P<v>(?=[A-Z0-9\-]*[\d\-])[A-Z0-9][A-Z0-9\-]{2,22}[A-Z0-9])(?![\w\-])",
                ),
                (re.compile(r"\b(?:[0-9A-Fa-f]{2}[:\-]){5}[0-9A-Fa-f]{2}\b"), 0.9),  # MAC address
            ],
        ),
        RegexRecognizer(
            "US_SSN",
            [
                _keyword(r"SSN|SSA|social\s+security|soc\s+sec|SS#?", ssn, 0.95),
                # After its keyword any 3-2-4 number is one, even in ranges the SSA never issues ("987-65-4321").
                _keyword(r"SSN|SSA|social\s+security|soc\s+sec|SS#?", r"(?P<v>\d{3}([\- ]?)\d{2}\2\d{4})(?!\d)", 0.9),
                (re.compile(r"\b(?P<v>(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4})\b"), 0.85),
                (re.compile(r"\b(?P<v>(?!000|666|9\d\d)\d{3} (?!00)\d{2} (?!0000)\d{4})\b"), 0.6),
            ],
        ),
        RegexRecognizer(
            "AGE",
            [
                (re.compile(r"\b(?P<v>\d{2,3})(?=\s*-?\s*(?:years?|yrs?|yo|y/o|y\.o\.)\b)", _I), 0.9),
                (re.compile(r"\b(?:aged?|age:)\s*(?P<v>\d{2,3})\b", _I), 0.9),
            ],
            validate=_age_ok,
        ),
        RegexRecognizer(
            "DATE_TIME",
            [
                (
                    re.compile(
                        r"(?<![\d/.\-])(?P<v>\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})|\d{1,2}-\d{1,2}-\d{4}|"
                        r"\d{4}[\-/]\d{1,2}[\-/]\d{1,2}|\d{1,2}\.\d{1,2}\.(?:\d{4}|\d{2}))(?![\d/.\-]\d)"
                    ),
                    0.85,
                ),
            ],
            validate=_numeric_date_ok,
            name="SiloNumericDate",
        ),
        RegexRecognizer(
            "DATE_TIME",
            [
                (re.compile(rf"\b{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?\b"), 0.85),
                (re.compile(rf"\b{_DAY}(?:\s+of)?[\s\-]+{_MONTH}(?:,?[\s\-]+\d{{2,4}})?\b"), 0.85),
                (re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"), 0.6),
            ],
            name="SiloWordDate",
        ),
        RegexRecognizer(
            "CREDIT_CARD",
            [
                (re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])"), 0.9),
            ],
            validate=_luhn_ok,
        ),
        RegexRecognizer(
            "ROUTING_NUMBER",
            [
                (re.compile(r"\b(?P<v>[0-3]\d{8})\b"), 0.4),  # bare 9 digits: only with a valid ABA checksum
            ],
            validate=_aba_ok,
            name="SiloAbaChecksum",
        ),
        RegexRecognizer(
            "SWIFT_CODE",
            [
                _keyword(r"SWIFT|BIC|SWIFT/BIC|BIC/SWIFT", r"(?P<v>[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b", 0.9),
                (re.compile(r"\b(?P<v>[A-Z]{6}(?=[A-Z0-9]*\d)[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b"), 0.6),
            ],
            validate=_swift_ok,
        ),
        RegexRecognizer(
            "EMAIL_ADDRESS",
            [
                # Starts only where a run of address characters starts (not at every \b inside one): linear.
                (re.compile(r"(?<![\w.+\-])[\w.+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}\b"), 0.95),
            ],
        ),
        RegexRecognizer(
            "URL",
            [
                (re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"), 0.9),
                # A bare domain counts only with a path: "gmail.com" alone identifies nobody.
                (
                    # From the first label of a domain only (not after "x."): one scan of a long "a.a.a..." run.
                    re.compile(
                        r"(?<![A-Za-z0-9\-])(?<![A-Za-z0-9\-]\.)(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}"
                        r"/[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"
                    ),
                    0.7,
                ),
            ],
        ),
        RegexRecognizer(
            "IP_ADDRESS",
            [
                (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"), 0.9),
                (re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), 0.9),
            ],
            validate=_ip_ok,
        ),
        # Any other unique identifier: long digit runs and upper-case codes with several digits.
        RegexRecognizer(
            "UNIQUE_ID",
            [
                (re.compile(r"(?<![\w\-])\d{7,}(?![\w\-])"), 0.55),
                (
                    re.compile(
                        r"(?<![\w\-])(?=(?:[A-Z\-]*\d){3})(?=[0-9\-]*[A-Z])[A-Z0-9][A-Z0-9\-]{4,}[A-Z0-9](?![\w\-])"
                    ),
                    0.55,
                ),
                (re.compile(r"(?<![\w\-])\d{3,}(?:-\d{3,}){1,3}(?![\w\-])"), 0.55),
                # Any code after an identifier word: "patient ID 987654", "case #JH-998877", "claim no. C-1234".
                _keyword(
                    r"ID|identifier|case|claim|reference|ref|ticket|order|transaction|confirmation|booking|"
                    r"PESEL|NIP|tax\s+ID|TIN|national\s+ID|passport|employee|student|customer|client|file|"
                    r"invoice|receipt|application|tracking|shipment|membership",
                    r"(?P<v>(?=[A-Za-z0-9\-/]*\d)[A-Za-z0-9][A-Za-z0-9\-/]{2,30}[A-Za-z0-9])(?![\w\-/])",
                    0.8,
                ),
                # A number written as one: "#12345", "# 40021" (a list's "#1" or "#12" is too short to be one).
                (
                    re.compile(
                        r"(?<![\w#&])#[ \t]?(?P<v>(?=[A-Za-z\-]*\d)[A-Za-z0-9\-]*\d{4,}[A-Za-z0-9\-]*)(?![\w\-])"
                    ),
                    0.7,
                ),
            ],
        ),
        RegexRecognizer(
            "USERNAME",
            [
                # "username: jdoe_92", "@maria.k", "user jdoe92": a handle after its word, or an @-mention.
                _keyword(
                    r"user\s*name|user|login|handle|screen\s+name|nickname|account\s+name|user\s+ID",
                    r"(?P<v>@?[A-Za-z0-9][\w.\-]{2,31})(?![\w\-@])",
                    0.8,
                ),
                (re.compile(r"(?<![\w@.])@[A-Za-z][\w.]{2,30}\b"), 0.8),
            ],
        ),
    ]
