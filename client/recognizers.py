"""Offline recognizers for the scrubber: HIPAA Safe Harbor and bank identifiers without an NER model.

Two kinds:
- `RegexRecognizer`: compiled patterns, mostly "keyword + value" (MRN, member ID, routing number ...),
  some validated (ABA checksum, VIN alphabet, SWIFT country code, date ranges, ages over 89).
- `NamePlaceRecognizer`: people and places from context (titles, "Patient:", salutations, signatures,
  relatives, "lives in", "City, ST 12345", postcodes), from name lists, and by propagating every name or
  place found to its other mentions in the same text.

Name lists come from Faker's person providers (faker==40.54.0, already a dependency): maintained, with
per-locale first and last names for dozens of cultures, romanised for ja_JP / zh_CN. Only the locales in
`NAME_LIST_LOCALES` are used, so an evaluation can hold other locales out. Common English words (Faker's
en_US lorem list, spaCy's stop words and a domain list below) never count as name evidence on their own.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache

import phonenumbers
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# Faker locales whose name lists the recognizer uses. The rest of silo.synthetic.NAME_LOCALES is held out.
NAME_LIST_LOCALES: tuple[str, ...] = (
    "en_US", "en_GB", "en_IE", "es_ES", "es_MX", "de_DE", "fr_FR", "it_IT", "en_IN", "nl_NL", "pl_PL",
    "pt_BR", "tr_TR", "en_PK", "en_NG", "ja_JP", "zh_CN",
)  # fmt: skip
_NAME_ATTRS = (
    "first_names", "first_names_male", "first_names_female", "last_names",
    "first_romanized_names", "last_romanized_names", "last_names_male", "last_names_female", "male_last_names",
    "female_last_names", "unisex_last_names",
)  # fmt: skip

# Everyday clinical, banking and letter vocabulary that is capitalised at sentence starts and in headings.
_DOMAIN_WORDS = """
patient patients pt name names dob mrn dr doctor mr mrs ms mx miss prof nurse rn md do np pa phd dds
hospital medical center centre clinic practice health care home family community general regional memorial
university children veterans affairs samaritan sacred heart mercy riverside lakeside saint st good
discharge summary admitted discharged admission diagnosis diagnoses course follow followup attending
progress note notes assessment plan labs vitals history social physical exam findings impression
indication indications radiology report reports ct mri xray ray chest contrast images read by reviewed
telephone encounter callback spoke triage ed er icu ambulance identified vehicle vin towed scene temp rr
bp hr spo2 na cr wbc hba1c rx refills prescriber dea npi date time device interrogated serial number
battery remote monitoring portal geriatric falls risk medications medication reviewed kin daughter son
wife husband mother father sister brother partner address home fax phone email billing registration
reason visit insurance member id ids plan medicare medicaid account no acct routing iban bic swift
dear kind regards thanks thank sincerely faithfully yours hello hi hey good morning afternoon evening
please fraud alert block card cards transfer wire instructions amount sender car loan application
applicant driver licence license plate sedan requested online banking page direct deposit employer
payroll customer joint contact street road avenue lane drive court place boulevard suite apt unit floor
north south east west new lake port fort mount city town county state states usd eur gbp atm pin ssn
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december jan feb mar apr jun jul aug sep sept oct nov dec
presents presenting reports current continue former smoker drinks works quit lives resident care grove
maple oak pine cedar elm hill view park garden gardens valley river spring springs summer winter autumn
type diabetes hypertension pneumonia fibrillation failure copd kidney injury infection disorder migraine
asthma hypothyroidism cellulitis pain gout anaemia anemia gerd osteoarthritis sepsis seizure pancreatitis
thrombosis hyperlipidaemia metformin lisinopril atorvastatin apixaban furosemide albuterol levothyroxine
sertraline amoxicillin prednisone omeprazole insulin glargine ceftriaxone allopurinol ferrous sulfate
pacemaker pump cpap machine implant monitor icd ip url www http https com org net
sir madam hospital's luke's children's mary's anne's also old one was moved new hello dispute overdraft
"""


@cache
def common_words() -> frozenset[str]:
    """Lower-cased everyday English words: never name evidence by themselves."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lorem = importlib.import_module("faker.providers.lorem.en_US").Provider.word_list
    return frozenset(w.casefold() for w in (*STOP_WORDS, *lorem, *_DOMAIN_WORDS.split()))


def is_common(token: str) -> bool:
    low = token.casefold()
    words = common_words()
    if low in words:
        return True
    # Plain inflections of a common word are common too ("works", "reported", "checking").
    return any(low.endswith(sfx) and low[: -len(sfx)] in words for sfx in ("s", "es", "ed", "d", "ing", "ly"))


@cache
def name_tokens() -> frozenset[str]:
    """Lower-cased first and last name tokens from Faker's person providers for NAME_LIST_LOCALES."""
    tokens: set[str] = set()
    for locale in NAME_LIST_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in _NAME_ATTRS:
            for name in getattr(provider, attr, ()):
                tokens.update(t.casefold() for t in re.split(r"[\s\-]+", name) if len(t) > 1)
    return frozenset(t for t in tokens if not is_common(t))


# ---- regex recognizers --------------------------------------------------------------------------------

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
_SEP = r"(?:\s*(?:[:#,]|no\.?|nos\.?|number|num\.?|nr\.?|ID|is|was|of|ending)\s*){0,4}\s*"
# An identifier value: upper-case letters, digits and dashes, at least one digit, 4 to 24 characters.
_IDV = r"(?P<v>(?=[A-Z0-9\-]*\d)[A-Z0-9][A-Z0-9\-]{2,22}[A-Z0-9])(?![\w\-])"


def _keyword(words: str, value: str = _IDV, score: float = 0.85) -> tuple[re.Pattern[str], float]:
    return re.compile(rf"(?i:\b(?:{words}))\b{_SEP}{value}"), score


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


# US states and territories: the unit above the ones Safe Harbor removes, and the anchor of "City, ST".
US_STATE_CODES = frozenset(
    [
        "AL",
        "AK",
        "AZ",
        "AR",
        "CA",
        "CO",
        "CT",
        "DE",
        "DC",
        "FL",
        "GA",
        "HI",
        "ID",
        "IL",
        "IN",
        "IA",
        "KS",
        "KY",
        "LA",
        "ME",
        "MD",
        "MA",
        "MI",
        "MN",
        "MS",
        "MO",
        "MT",
        "NE",
        "NV",
        "NH",
        "NJ",
        "NM",
        "NY",
        "NC",
        "ND",
        "OH",
        "OK",
        "OR",
        "PA",
        "RI",
        "SC",
        "SD",
        "TN",
        "TX",
        "UT",
        "VT",
        "VA",
        "WA",
        "WV",
        "WI",
        "WY",
        "PR",
        "GU",
        "VI",
        "AS",
        "MP",
    ]
)
_COUNTRY_CODES = frozenset(phonenumbers.SUPPORTED_REGIONS)  # ISO 3166 alpha-2, maintained by phonenumbers


def _ip_ok(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _swift_ok(v: str) -> bool:
    return v[4:6] in _COUNTRY_CODES


_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
    r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Close|Row|Walk|Alley|Loop|Pike|"
    r"Path|Run|Pass|Plaza|Crossing|Expressway|Freeway|Turnpike|Route|Rte|Green|Grove|Gardens?|Heights|"
    r"Hills?|Park|Ridge|Valley|Views?|Village|Meadows?|Mills?|Springs?|Stravenue|Mountains?|Forks?|"
    r"Harbou?rs?|Islands?|Lakes?|Landing|Manors?|Estates?|Points?|Ports?|Shores?|Squares?|Stations?|"
    r"Streets|Summit|Tunnel|Union|Unions|Wells?|Junctions?|Knolls?|Locks?|Lodge|Mall|Motorway|Oval|"
    r"Orchard|Overpass|Plains?|Prairie|Ramp|Ranch|Rapids?|Rest|Roads|Routes|Shoals?|Skyway|Spur|Tracks?|"
    r"Trafficway|Underpass|Vista|Ways|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Cliffs?|Club|Common|"
    r"Corners?|Course|Courts|Coves?|Creek|Crest|Curve|Dale|Dam|Divide|Drives|Extensions?|Falls?|Ferry|"
    r"Fields?|Flats?|Fords?|Forest|Forges?|Freeway|Glens?|Groves|Hollow|Inlet|Isle|Keys?|Light|Lights|"
    r"Neck|Orchard|Pines|Radial|Ridges|River|Shoal|Throughway|Trace|Viaduct|Villages?|Ville|Branch|Bridge|"
    r"Brooks?|Burgs?|Bluffs?|Bottom)"
)
_CAPWORD = r"[A-Z][\w'’\-]*"
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Fl\.?|Floor|Room|Rm\.?|#)\s*[\w\-]+)?"
_EU_STREET_WORD = (
    r"(?:stra(?:ss|ß)e|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|straat|laan|plein|gracht|kade|"
    r"singel|dijk|steeg|hof|boulevard|markt)"
)
_EU_STREET_PREFIX = (
    r"(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|cours|square|"
    r"Calle|C/|Avenida|Avda\.?|Plaza|Paseo|Camino|Carrer|Ronda|Cuesta|Vía|Via|Viale|Piazza|Piazzale|Corso|"
    r"Largo|Vicolo|Contrada|Borgo|Strada|Rotonda|Stretto|Canale|Incrocio|Callejón|Glorieta|Pasaje|Rambla|"
    r"Travesía|Urbanización|Rua|Travessa|Praça|Alameda|ul\.|ulica|aleja|al\.)"
)
_NUMBER = r"\d{1,5}(?:[\-/]\d{1,4})?[A-Za-z]?"
_PARTICLE = r"(?:de|del|de la|des|du|di|della|dos|da|do|das|la|le|les|los|las|y|e|van|von|der|den)"
# One to four capitalised words, with name particles between them: "de la Paix", "Desiderio Valbuena".
_EU_STREET_NAME = rf"(?:{_PARTICLE}\s+)*[A-Z][\w'’\-]*(?:\s+(?:{_PARTICLE}\s+)*[A-Z][\w'’\-]*){{0,3}}"


def regex_recognizers() -> list[EntityRecognizer]:
    """The offline pattern recognizers, one per entity type."""
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
        ),  # fmt: skip
        RegexRecognizer(
            "HEALTH_PLAN_NUMBER",
            [
                _keyword(
                    r"member|subscriber|policy|health\s+plan|insurance|insurer|Medicare|Medicaid|beneficiary|"
                    r"group|plan|MBI|HICN|coverage|payer"
                ),
            ],
        ),  # fmt: skip
        RegexRecognizer(
            "ROUTING_NUMBER",
            [
                _keyword(r"routing|ABA|RTN|transit|sort\s+code", r"(?P<v>\d{9}|\d{2}-\d{2}-\d{2})(?!\d)", 0.9),
            ],
        ),  # fmt: skip
        RegexRecognizer(
            "ACCOUNT_NUMBER",
            [
                _keyword(
                    r"account|acct\.?|acc\.?|a/c|savings|checking|chequing|deposit",
                    r"(?P<v>\d[\d\- ]{3,22}\d)(?![\w\-])",
                ),
            ],
        ),  # fmt: skip
        RegexRecognizer(
            "LICENSE_NUMBER",
            [
                _keyword(
                    r"licen[cs]e(?!\s+plate)|DL|driver'?s?\s+licen[cs]e|DEA|NPI|certificate|cert|permit|"
                    r"passport|registration(?!\s+plate)|board\s+cert\w*|credential"
                ),
            ],
        ),  # fmt: skip
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
        ),  # fmt: skip
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
        ),  # fmt: skip
        RegexRecognizer(
            "US_SSN",
            [
                _keyword(r"SSN|SSA|social\s+security|soc\s+sec|SS#?", ssn, 0.95),
                (re.compile(r"\b(?P<v>(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4})\b"), 0.85),
                (re.compile(r"\b(?P<v>(?!000|666|9\d\d)\d{3} (?!00)\d{2} (?!0000)\d{4})\b"), 0.6),
            ],
        ),  # fmt: skip
        RegexRecognizer(
            "AGE",
            [
                (re.compile(r"\b(?P<v>\d{2,3})(?=\s*-?\s*(?:years?|yrs?|yo|y/o|y\.o\.)\b)", _I), 0.9),
                (re.compile(r"\b(?:aged?|age:)\s*(?P<v>\d{2,3})\b", _I), 0.9),
            ],
            validate=_age_ok,
        ),  # fmt: skip
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
        ),  # fmt: skip
        RegexRecognizer(
            "DATE_TIME",
            [
                (re.compile(rf"\b{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?\b"), 0.85),
                (re.compile(rf"\b{_DAY}(?:\s+of)?[\s\-]+{_MONTH}(?:,?[\s\-]+\d{{2,4}})?\b"), 0.85),
                (re.compile(rf"\b{_MONTH}\s+\d{{4}}\b"), 0.6),
            ],
            name="SiloWordDate",
        ),  # fmt: skip
        RegexRecognizer(
            "CREDIT_CARD",
            [
                (re.compile(r"(?<![\d\-])(?:\d[ \-]?){12,18}\d(?![\d\-])"), 0.9),
            ],
            validate=_luhn_ok,
        ),  # fmt: skip
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
        ),  # fmt: skip
        RegexRecognizer(
            "ROUTING_NUMBER",
            [
                (re.compile(r"\b(?P<v>[0-3]\d{8})\b"), 0.4),  # bare 9 digits: only with a valid ABA checksum
            ],
            validate=_aba_ok,
            name="SiloAbaChecksum",
        ),  # fmt: skip
        RegexRecognizer(
            "SWIFT_CODE",
            [
                _keyword(r"SWIFT|BIC|SWIFT/BIC|BIC/SWIFT", r"(?P<v>[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b", 0.9),
                (re.compile(r"\b(?P<v>[A-Z]{6}(?=[A-Z0-9]*\d)[A-Z0-9]{2}(?:[A-Z0-9]{3})?)\b"), 0.6),
            ],
            validate=_swift_ok,
        ),  # fmt: skip
        RegexRecognizer(
            "LOCATION",
            [
                (
                    re.compile(
                        rf"\b\d{{1,6}}[A-Za-z]?(?:\s+[NSEW]\.?)?(?:\s+{_CAPWORD}){{1,4}}\s+{_STREET_SUFFIX}\b\.?{_UNIT}"
                    ),
                    0.85,
                ),
                # A bounded word (compound street names are shorter): unbounded, a long hyphenated run is quadratic.
                (re.compile(rf"\b[A-ZÄÖÜ][\w'’\-]{{0,48}}?(?i:{_EU_STREET_WORD})\s+{_NUMBER}\b"), 0.85),
                (re.compile(rf"\b{_NUMBER},?\s+{_EU_STREET_PREFIX}\s+{_EU_STREET_NAME}{_UNIT}"), 0.8),
                (re.compile(rf"\b{_EU_STREET_PREFIX}\s+{_EU_STREET_NAME},?\s+{_NUMBER}\b{_UNIT}"), 0.8),
                # "ZIP 02139", "..., MA 02139-1234" (the state stays), UK and Dutch postcodes.
                (re.compile(r"(?i:\bzip(?:\s*code)?)\s*:?\s*(?P<v>\d{5}(?:-\d{4})?)\b"), 0.9),
                (
                    re.compile(r"\b(?:" + "|".join(sorted(US_STATE_CODES)) + r")\s+(?P<v>\d{5}(?:-\d{4})?)\b"),
                    0.9,
                ),
                (re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"), 0.8),
                # European postcodes before a town: ", 49522 Neuss", "3245 KK Piershil".
                (
                    re.compile(r"(?<=, )\d{5}(?=[ \t]+[A-Z][^\W\d_])|\b\d{4} ?[A-Z]{2}(?=[ \t]+[A-Z][^\W\d_])"),
                    0.8,
                ),
            ],
        ),  # fmt: skip
        RegexRecognizer(
            "EMAIL_ADDRESS",
            [
                # Starts only where a run of address characters starts (not at every \b inside one): linear.
                (re.compile(r"(?<![\w.+\-])[\w.+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}\b"), 0.95),
            ],
        ),  # fmt: skip
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
        ),  # fmt: skip
        RegexRecognizer(
            "IP_ADDRESS",
            [
                (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"), 0.9),
                (re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), 0.9),
            ],
            validate=_ip_ok,
        ),  # fmt: skip
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
            ],
        ),  # fmt: skip
    ]


# ---- people and places ----------------------------------------------------------------------------

_WORD = re.compile(r"(?<!\w)[^\W\d_](?:[^\W\d_]|['’\-](?=[^\W\d_]))*")
_PARTICLES = frozenset(
    [
        "van",
        "von",
        "der",
        "den",
        "de",
        "del",
        "della",
        "di",
        "da",
        "dos",
        "das",
        "du",
        "le",
        "la",
        "bin",
        "bint",
        "ibn",
        "al",
        "el",
        "ben",
        "ter",
        "ten",
        "zu",
        "y",
        "e",
        "ó",
        "ní",
        "mac",
    ]
)
_TITLE = r"(?:Dr|Mr|Mrs|Ms|Mx|Miss|Mister|Prof|Professor|Rev|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra|Srta)\.?"
_STRONG_PERSON_BEFORE = re.compile(
    rf"(?:\b{_TITLE}\s+|"
    r"(?i:\b(?:patient|pt|name|patient\s+name|full\s+name|attending|prescriber|provider|physician|surgeon|"
    r"applicant|customer|client|sender|recipient|beneficiary|payee|holder|account|kin|contact|guardian|caregiver|for|"
    r"from|to|by|signed|cc|author|nurse|RN|technician|interpreter)\s*:\s*)|"
    r"(?i:\b(?:dear|hi|hello|hey|thanks|thank\s+you|regards|sincerely|faithfully|best|cheers|yours|love)\b[ \t,]*\n?[ \t]*)|"
    r"(?i:\b(?:daughter|son|wife|husband|mother|father|sister|brother|partner|spouse|fianc[ée]e?|grandson|"
    r"granddaughter|grandmother|grandfather|niece|nephew|aunt|uncle|cousin|friend|neighbou?r|roommate|"
    r"caregiver|sibling|parent|child)\s+)|"
    r"(?i:\b(?:this\s+is|my\s+name\s+is|i\s+am|i'm|identified\s+as|spoke\s+with|seen\s+by|seeing|named|"
    r"called|signed\s+by|dictated\s+by|read\s+by|referred\s+by|accompanied\s+by|met\s+with)\s+)|"
    r"(?:^|\n)\s*(?:--|—)\s*)$"
)
_TITLE_BEFORE = re.compile(rf"\b{_TITLE}\s+$")
_WEAK_PERSON_BEFORE = re.compile(r"(?i:\b(?:by|with|to|for|from|and|of|as|&)\s+)$")
# "..., MD", "X is a 72-year-old", "X lives in", "X, aged 93": what only a person does.
_STRONG_PERSON_AFTER = re.compile(
    r"^(?:,?\s*(?:MD|M\.D\.|RN|DO|NP|PA-C|PA|PhD|DDS|DMD|FNP|LPN|CNA|MBBS|FRCP|Esq)\b|\s+(?:is|was)\s+an?\s+\d|"
    r"\s+(?:lives|lived|resides|resided|works|worked|reports|reported|presents|presented|denies|denied|states|"
    r"stated|complains|says|said|feels|felt|notes|noted|was\s+seen|was\s+admitted|was\s+treated)\b|"
    r",\s+(?:a|an|aged?|born|DOB|d\.o\.b\.)\s)"
)
_STRONG_PLACE_BEFORE = re.compile(
    r"(?i:\b(?:lives|living|live|lived|resides|residing|resident|moved|relocated|born|raised|located|based|"
    r"grew\s+up|hometown|city\s+of|town\s+of|village\s+of|county\s+of|visiting|travell?ed)\s+"
    r"(?:(?:in|at|to|of|near|from)\s+)?(?:the\s+)?)$"
)
_WEAK_PLACE_BEFORE = re.compile(r"(?i:\b(?:in|at|near|around|outside|towards?)\s+)$")
# ", Boston" after an institution: the institution's town.
_INSTITUTION_BEFORE = re.compile(
    r"(?:Hospital|Medical\s+Center|Center|Centre|Clinic|Practice|Infirmary|Home|Hospice|University|Bank|"
    r"Branch|Office)\s*,\s*$"
)
_STATE_AFTER = re.compile(
    r"^,\s*(?:" + "|".join(sorted(US_STATE_CODES)) + r")(?:\s+\d{5}(?:-\d{4})?(?!\w)|\s*[.,;\n]|$)"
)
_POSTCODE_BEFORE = re.compile(r"(?:\b\d{5}|\b\d{4}\s?[A-Z]{2}|\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2})[ \t]+$")
_PLACE_SUFFIX = frozenset(
    [
        "street",
        "st",
        "avenue",
        "ave",
        "road",
        "rd",
        "lane",
        "drive",
        "court",
        "way",
        "boulevard",
        "blvd",
        "hospital",
        "center",
        "centre",
        "clinic",
        "practice",
        "home",
        "hospice",
        "university",
        "bank",
        "school",
        "college",
        "church",
        "county",
    ]
)
_LABEL_COMMA = re.compile(r"(?i:\b(?:patient|name|pt|patient\s+name)\s*:\s*)$")


def _sentence_initial(text: str, start: int) -> bool:
    i = start
    while i > 0 and text[i - 1] in " \t":  # (not `text[:start].rstrip()`: that is quadratic over a text)
        i -= 1
    return i == 0 or text[i - 1] in '.!?:\n"(' or text[max(0, i - 2) : i] == "--"


class NamePlaceRecognizer(EntityRecognizer):
    """PERSON and LOCATION without NER: capitalised runs scored by context, name lists and propagation."""

    def __init__(self) -> None:
        self._names = name_tokens()
        super().__init__(supported_entities=["PERSON", "LOCATION"], name="SiloNamePlace")

    def load(self) -> None:
        pass

    def _runs(self, text: str) -> Iterable[list[re.Match[str]]]:
        """Maximal runs of capitalised words (with name particles inside) separated by single spaces."""
        run: list[re.Match[str]] = []
        for m in _WORD.finditer(text):
            word = m.group()
            cap = word[0].isupper()
            joined = bool(run) and text[run[-1].end() : m.start()] in (" ", "")
            if run and joined and (cap or word.casefold() in _PARTICLES):
                run.append(m)
                continue
            if run:
                yield run
            run = [m] if cap else []
        if run:
            yield run

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        found: list[tuple[str, int, int, float]] = []
        for run in self._runs(text):
            # Trailing particles are ordinary words ("Kato de" cannot end a name).
            while run and run[-1].group()[0].islower():
                run.pop()
            while run and run[0].group().isupper() and len(run[0].group()) <= 3:  # "AQ Eijsden": codes first
                run.pop(0)
            hit = self._anchored(text, run) if run else None
            if hit is None:
                # Leading common words are not part of the name ("Daughter Ross", "Thanks Mary").
                while run and is_common(run[0].group()) and run[0].group().casefold() not in self._names:
                    run.pop(0)
                hit = self._classify(text, run) if run else None
            if hit:
                found.append(hit)
        found.extend(propagate_mentions(text, found))
        return [RecognizerResult(t, s, e, score) for t, s, e, score in found]

    def _anchored(self, text: str, run: list[re.Match[str]]) -> tuple[str, int, int, float] | None:
        """Runs with an unambiguous anchor: the words may be ordinary ones ("Little Rock", "Dr. Will Rose")."""
        start, end = run[0].start(), run[-1].end()
        if all(m.group().isupper() and len(m.group()) <= 3 for m in run):  # "USD", "MRN": codes, not names
            return None
        before, after = text[max(0, start - 48) : start], text[end : end + 16]
        if _TITLE_BEFORE.search(before) or _LABEL_COMMA.search(before):
            return ("PERSON", start, self._extend_last_first(text, before, end), 0.85)
        if _STRONG_PERSON_BEFORE.search(before):  # "Attending: Tao Xu, MD" is not in Maryland
            return None
        if _STATE_AFTER.match(after) or _INSTITUTION_BEFORE.search(before) or _POSTCODE_BEFORE.search(before):
            return ("LOCATION", start, end, 0.85)
        return None

    def _classify(self, text: str, run: list[re.Match[str]]) -> tuple[str, int, int, float] | None:
        start, end = run[0].start(), run[-1].end()
        words = [m.group() for m in run if m.group()[0].isupper()]
        # Short all-capitals words are codes and states ("DE", "MRN"), never name evidence.
        uncommon = [w for w in words if len(w) > 1 and not is_common(w) and not (w.isupper() and len(w) <= 3)]
        if not uncommon or words[-1].casefold() in _PLACE_SUFFIX:
            return None
        listed = sum(w.casefold() in self._names for w in uncommon)
        before, after = text[max(0, start - 48) : start], text[end : end + 24]
        if _STRONG_PLACE_BEFORE.search(before):
            return ("LOCATION", start, end, 0.85)
        if _STRONG_PERSON_BEFORE.search(before) or _STRONG_PERSON_AFTER.match(after):
            return ("PERSON", start, end, 0.85)
        if _WEAK_PLACE_BEFORE.search(before) and not listed:
            return ("LOCATION", start, end, 0.6)
        if listed and len(words) >= 2:
            return ("PERSON", start, end, 0.8)
        weak = bool(_WEAK_PERSON_BEFORE.search(before))
        initial = _sentence_initial(text, start)
        if listed and (weak or not initial):
            return ("PERSON", start, end, 0.7)
        if len(uncommon) >= 2 and not initial:
            return ("PERSON", start, end, 0.65 if weak else 0.55)
        if listed:
            return ("PERSON", start, end, 0.45)
        return None

    @staticmethod
    def _extend_last_first(text: str, before: str, end: int) -> int:
        """After "Name:" a comma can separate last and first name ("Nelson, Eleanor", "NELSON, ELEANOR")."""
        if not _LABEL_COMMA.search(before):
            return end
        m = re.match(r", ?([A-Z][\w'’\-]*(?: [A-Z][a-z][\w'’\-]*)?)", text[end : end + 64])
        if m and not is_common(m.group(1).split()[0]):
            return end + m.end()
        return end


def propagate_mentions(text: str, found: list[tuple[str, int, int, float]]) -> list[tuple[str, int, int, float]]:
    """Every other mention of a word already found as a name or place ("Ms. Nelson" ... "Nelson")."""
    seen: dict[str, str] = {}
    for etype, s, e, score in found:
        if score < 0.6:
            continue
        for w in _WORD.findall(text[s:e]):
            if len(w) > 2 and w[0].isupper() and not is_common(w):
                seen.setdefault(w.casefold(), etype)
    if not seen:
        return []
    return [
        (seen[m.group().casefold()], m.start(), m.end(), 0.7)
        for m in _WORD.finditer(text)
        if m.group().casefold() in seen
    ]
