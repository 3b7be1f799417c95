"""Organisations and facilities: hospitals, clinics and practices (typed LOCATION, as i2b2 files them), and
employers, banks, insurers and schools (ORGANIZATION), recognised by their head word, not by a list of names.

A clinic's name places a patient as surely as a town does: "seen at Baystate Hospital", "admitted to St.
Luke's", "our Newark clinic". What makes a run of capitalised words a facility is its head word (Hospital,
Clinic, Medical Center, Infirmary ...) or a saint's name ("St. Mary's", "Mt. Sinai"); a company is a run
ending in a legal form (Inc, Ltd, GmbH ...) or an organisation word (Bank, Insurance, University ...).
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer

from client.recognizers.pattern import RegexRecognizer
from client.recognizers.vocabulary import is_common

# A capitalised word or an initialism, possibly possessive or hyphenated: "Luke's", "NYU", "Cedars-Sinai".
# Bounded and with one way to split a run (hyphens only inside a word, never between two): linear on hostile
# runs such as "Ab-Ab-Ab-..." (unbounded, they backtracked exponentially).
_CAP = r"(?:[A-Z][\w'’]{0,30}(?:-[\w'’]{1,30}){0,3}\.?)"
# Words that join the parts of an organisation's name.
_JOIN = r"(?:and|of|&|for|the|de|du|la|der|on|upon)"
_NAME = rf"(?:(?:St|Mt|Saint|Mount|Ft|Fort)\.?[ \t]+)?{_CAP}(?:[ \t]+(?:{_JOIN}[ \t]+)?{_CAP}){{0,4}}"
_HEALTH_HEAD = (
    r"(?:Hospital\s+Cent(?:er|re)|Hospitals?|Clinics?|Medical\s+Cent(?:er|re)|Med\.?\s+Cent(?:er|re)|Health\s*Cent(?:er|re)|"
    r"Health\s*[Cc]are|Health\s+System|Health\s+Services|Health|Infirmary|Hospice|Medical\s+Group|"
    r"Medical\s+Practice|Family\s+Practice|Practice|Surgery|Pharmacy|Laborator(?:y|ies)|Labs?|Institute|"
    r"Rehabilitation\s+Cent(?:er|re)|Nursing\s+Home|Care\s+Home|Cancer\s+Cent(?:er|re)|Med|Medical|"
    r"Sanatorium|Polyclinic|Krankenhaus|Klinikum|Hôpital|Hospital\s+General)"
)
_ORG_HEAD = (
    r"(?:Inc|LLC|L\.L\.C|Ltd|Limited|Corp|Corporation|Co|Company|GmbH|AG|KG|SA|S\.A|SAS|SRL|S\.r\.l|BV|NV|"
    r"plc|PLC|LLP|LP|Group|Holdings|Bank|Insurance|Assurance|Mutual|Associates|Partners|Foundation|Trust|"
    r"University|College|School|Academy|Credit\s+Union|Solutions|Services|Systems|Technologies|Consulting|"
    r"Enterprises|Industries|Logistics|Pharmaceuticals|Labs)"
)
# A lower-case facility word after a capitalised place: "our Newark clinic", "the Dallas facility".
_LOWER_FACILITY = r"(?:hospital|clinic|facility|office|practice|center|centre|surgery|ward|unit|campus)"
_SAINT = r"\b(?:St|Saint|Mt|Mount)\.?[ \t]+[A-Z][a-z]+(?:['’]s)?\b(?:[ \t]+(?i:hospital|clinic|infirmary|hospice)\b)?"
_HEADS = re.compile(rf"(?:{_HEALTH_HEAD}|{_ORG_HEAD}|{_LOWER_FACILITY})\.?$")
_NAME_WORD = re.compile(r"[^\W\d_][\w'’]*")
# A head that only a place of care has: a capitalised name before it is that place's proper name, even when
# its words are everyday ones ("Memorial Hospital", "Lakeside Clinic", "City Medical Center"), as i2b2 files
# them. Weaker heads ("Health", "Practice", "Surgery") also name services, so their name must be uncommon.
_FACILITY_HEAD = (
    r"(?:Hospital\s+Cent(?:er|re)|Hospitals?|Clinics?|Medical\s+Cent(?:er|re)|Med\.?\s+(?:Cent(?:er|re)|Ctr\.?)|Health\s*Cent(?:er|re)|"
    r"Infirmary|Hospice|Medical\s+Group|Nursing\s+Home|Care\s+Home|Cancer\s+Cent(?:er|re)|Hosp\.?|"
    r"Rehabilitation\s+Cent(?:er|re)|Sanatorium|Polyclinic|Krankenhaus|Klinikum|Hôpital)"
)
# The facility's town or patron after it: "Children's Hospital of Philadelphia", "University of Leeds".
_OF_PLACE = r"(?:[ \t]+of[ \t]+(?:the[ \t]+)?[A-Z][\w'’\-]*(?:[ \t]+[A-Z][\w'’\-]*){0,2})?"


# A specialty or service before a head is no name: "Cardiology clinic", "Neurology Center".
_SPECIALTY = re.compile(r"(?i:.*(?:ology|iatry|iatrics|pedics|surgery|care|therapy|medicine))$")


def _name_word(word: str) -> bool:
    return (not is_common(word) and not _SPECIALTY.match(word)) or (word.isupper() and len(word) > 1)


def _named(value: str) -> bool:
    """The words before the head name something: one is not an everyday word ("Baystate", "NYU") or a saint
    ("St. Mary's Hospital"), unlike "General Health", "Mental Health" or "Family Practice", which identify no
    one."""
    name = _HEADS.sub("", value)
    if re.match(r"(?:St|Mt|Saint|Mount)\.?[ \t]", name):
        return True
    return any(_name_word(w) for w in _NAME_WORD.findall(name))


def _proper(value: str) -> bool:
    """A capitalised name before a place-of-care head: not one generic word ("The Hospital", "Our Clinic")."""
    words = _NAME_WORD.findall(re.sub(rf"{_FACILITY_HEAD}.*$", "", value, flags=re.S))
    return bool(words) and not all(w.casefold() in _GENERIC for w in words)


# Words that, alone before a head, name no particular place ("The Clinic", "Main Hospital" is a name).
_GENERIC = frozenset(["the", "our", "your", "his", "her", "their", "this", "that", "a", "an", "any", "each", "every"])


def organisation_recognizers() -> list[EntityRecognizer]:
    return [
        RegexRecognizer(
            "LOCATION",
            [
                (re.compile(rf"\b{_NAME}[ \t]+{_HEALTH_HEAD}\b\.?{_OF_PLACE}"), 0.8),
                (re.compile(rf"\b(?:our|the|his|her|their|a|an)[ \t]+(?P<v>{_NAME}[ \t]+{_LOWER_FACILITY})\b"), 0.7),
                # "seen in Boston clinic", "at UCLA med center", "Albuquerque Neurology Center".
                (
                    re.compile(rf"\b{_NAME}[ \t]+(?:clinic|hospital|med(?:ical)?[ \t]+cent(?:er|re)|Cent(?:er|re))\b"),
                    0.7,
                ),
            ],
            validate=_named,
            name="SiloFacility",
        ),
        RegexRecognizer(
            "LOCATION",
            [(re.compile(rf"(?<![.!?:\n]\s)(?<!^)\b{_NAME}[ \t]+{_FACILITY_HEAD}(?![\w'’]){_OF_PLACE}"), 0.75)],
            validate=_proper,
            name="SiloCareFacility",
        ),
        RegexRecognizer("LOCATION", [(re.compile(_SAINT), 0.7)], name="SiloSaint"),
        RegexRecognizer(
            "ORGANIZATION",
            [(re.compile(rf"\b{_NAME},?[ \t]+{_ORG_HEAD}\b\.?"), 0.7)],
            validate=_named,
            name="SiloOrganisation",
        ),
    ]
