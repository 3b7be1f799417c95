"""Organisations and facilities: hospitals, clinics and practices (typed LOCATION, as i2b2 files them), and
employers, banks, insurers and schools (ORGANIZATION), recognised by their head word, not by a list of names.

A clinic's name places a patient as surely as a town does: "seen at Baystate Hospital", "admitted to St.
Luke's", "our Newark clinic". What makes a run of capitalised words a facility is its head word (Hospital,
Clinic, Medical Center, Infirmary ...) or a saint's name ("St. Mary's", "Mt. Sinai"); a company is a run
ending in a legal form (Inc, Ltd, GmbH ...) or an organisation word (Bank, Insurance, University ...).
"""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from client.recognizers.pattern import RegexRecognizer
from client.recognizers.vocabulary import is_clinical, is_common

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


# A capital of any Latin script, and a capitalised word ("Růžička", "Şükürlü", "O'Donnell").
_UP = "A-ZÀ-ÖØ-ÞĀ-ſȘȚ"
_ANY_CAP = rf"[{_UP}][\w'’]{{0,30}}(?:-[\w'’]{{1,30}}){{0,2}}"
# "and" in the languages whose firms are named after their partners: "Kiss és Gál", "Wouters, Huysmans en Bracke".
_AND = r"(?:and|&|und|en|et|y|e|és|og|och|ja|i|a|và|ve|ir|un|și)"
# Up to five capitalised words, perhaps with an "and" between them ("Bùi và Hoàng"), or a list that ends in
# one ("Cole, Rivas and Carter"; a comma alone ends the name: "XYZ Insurance, Phone: ...").
_PARTNERS = (
    rf"{_ANY_CAP}(?:[ \t]+(?:{_AND}[ \t]+)?{_ANY_CAP}){{0,4}}"
    rf"(?:(?:,[ \t]*{_ANY_CAP}){{1,3}},?[ \t]+{_AND}[ \t]+{_ANY_CAP})?"
)

# The word for a hospital, clinic or health centre in many languages, and compounds ending in one ("Rigshospitalet",
# "keskussairaala", "Universitätsklinikum"): a place of care by its head word, whatever language names it.
_CARE_WORDS = """
hospital hospitalet hospitali hôpital ospedale ospidéal spital spitalul szpital sygehus sykehus sykehuset sjukhus
sjukhuset sjúkrahús sjúkrahúsið spítali sairaala terveyskeskus haigla kliinikum kliinik kórház kórháza nemocnice
nemocnica bolnica bolnišnica ligoninė slimnīca krankenhaus klinikum klinik kliniek klinika klinikka clinique
clínica clinica ziekenhuis hastanesi hastane xəstəxana xəstəxanası shifoxona shifoxonasi policlinico poliklinika
poliklinik polyclinic vårdcentral vårdcentralen puskesmas rsud infirmary
"""
_CARE_WORD = "(?i:" + "|".join(sorted(_CARE_WORDS.split(), key=len, reverse=True)) + ")"
_CARE_ENDING = "|".join(w for w in _CARE_WORDS.split() if len(w) >= 6)
# Up to three capitalised words (a lower-case adjective may follow: "Rautjärvin yliopistollinen sairaala"), the
# head word (or a compound ending in it), then a town or patron, perhaps after a particle ("Sykehuset i Molde",
# "Szpital Miejski w Radomiu", "Hospital Universitario de Salamanca", "Nemocnice Řevnice").
_CARE_PARTICLE = r"(?:(?:de|di|da|do|du|des|del|of|in|i|w|á|ya|v|u|na|im|am|an[ \t]+der)[ \t]+)"
# A town or patron after the head word, never a month or a day ("terveyskeskus in March").
_CARE_NAME = (
    r"(?!(?:January|February|March|April|May|June|July|August|September|October|November|December|Monday|"
    rf"Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b){_ANY_CAP}"
)
# Found head first (one pattern with the optional name before the head word was tried at every word and cost
# more than all other patterns together), then widened over the name around it.
_CARE_SET = frozenset(_CARE_WORDS.split())
_CARE_ENDINGS = tuple(w for w in _CARE_SET if len(w) >= 6)
_ANY_WORD = re.compile(r"[^\W\d_][\w'’]*")
_CARE_BEFORE = re.compile(rf"\b(?:{_ANY_CAP}[ \t]+){{1,3}}(?:[a-zß-ž][\w]{{3,}}[ \t]+)?$")
_CARE_AFTER = re.compile(rf"(?:[ \t]+{_CARE_PARTICLE}?{_CARE_NAME}){{1,3}}")
# How far before its head word a place of care's name may start: three long words and an adjective.
_CARE_REACH = 128


class CarePlaceRecognizer(EntityRecognizer):
    """A place of care by its head word in any language, with the name around it (typed LOCATION, as i2b2)."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["LOCATION"], name="SiloCareAnyLanguage")

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        out = []
        for m in _ANY_WORD.finditer(text):
            word = m.group().casefold()
            # The head word itself, or a capitalised compound ending in one ("Rigshospitalet").
            if word not in _CARE_SET and not (m.group()[0].isupper() and word.endswith(_CARE_ENDINGS)):
                continue
            word_start, end = m.span()
            before = _CARE_BEFORE.search(text, max(0, word_start - _CARE_REACH), word_start)
            after = _CARE_AFTER.match(text, end)
            span = (before.start() if before else word_start, after.end() if after else end)
            if _names_a_place(text[span[0] : span[1]]):
                out.append(RecognizerResult("LOCATION", span[0], span[1], 0.75))
        return out


_CARE_INITIALISM = re.compile(rf"\b(?:CHU|CHR|KBC|LKH|RSUD|AZ|UZ)(?:[ \t]+(?:de|du|d'|of)[ \t]*)?[ \t]+{_ANY_CAP}")


def _names_a_place(value: str) -> bool:
    """Beside the head word, a word that is no everyday word or specialty: "Hospital Olmo", not "Hospital in March"."""
    words = [w for w in _NAME_WORD.findall(value) if not re.fullmatch(_CARE_WORD, w)]
    return any(not is_common(w) and not _SPECIALTY.match(w) and len(w) > 1 for w in words)


# Legal forms of companies across the world (ISO 20275's commonest abbreviations) and "... and Sons" words: a
# capitalised name before one is a firm. Forms with dots or of four letters and more are unambiguous; short
# ones ("AB", "AS", "Oy") need a name that is not an everyday word.
_LEGAL_FORM = (
    r"(?:j\.d\.o\.o\.|d\.o\.o\.|d\.d\.|s\.p\.|s\.r\.o\.|spol\.[ \t]+s[ \t]+r\.[ \t]?o\.|a\.s\.|k\.s\.|v\.o\.s\.|"
    r"Kft\.?|Zrt\.?|Nyrt\.?|Bt\.?|Sp\.[ \t]?z[ \t]?o\.[ \t]?o\.|Sp\.[ \t]?[jk]\.|s\.c\.|S\.A\.S\.?|S\.A\.?|S/A|S\.L\.U?\.?|"
    r"S\.Coop\.?|Ltda\.?|E\.I\.R\.L\.?|S\.p\.A\.?|SpA|S\.n\.c\.?|S\.a\.s\.?|Oyj|Oy|Ay|Ky|AB|HB|ASA|AS|A/S|ApS|"
    r"I/S|ehf\.?|hf\.?|OÜ|UAB|SIA|TNHH(?:[ \t]+MTV)?|JSC|Tbk|CV|BVBA|SPRL|e\.K\.|mbH|KGaA|A\.Ş\.|Ltd\.?[ \t]+Şti\.?|"
    r"Pty\.?(?:[ \t]+Ltd\.?)?|Pvt\.?(?:[ \t]+Ltd\.?)?|Sdn\.?[ \t]+Bhd\.?|Bhd|K\.K\.|EOOD|OOD|AD|MMC|ASC|QSC|"
    r"Groep|Grupa|Gruppe|Groupe|Grupo|Sons|Söhne|Fils|Hijos|Figli|Zonen|Sønner|syn|Társa|[Cc]o\.)"
)
_FIRM = re.compile(
    rf"\b(?:(?:PT|CV|UD|PD|Firma|Spółdzielnia|Công[ \t]+ty)[ \t]+)?{_PARTNERS}(?:,?[ \t]+(?:{_AND}[ \t]+)?)"
    rf"(?:Công[ \t]+ty[ \t]+)?{_LEGAL_FORM}(?![\w/])"
)
# A firm written with its form first: "PT Megantara Samosir", "UD Laksita".
_FORM_FIRST = re.compile(rf"\b(?:PT|CV|UD|PD|Firma|Spółdzielnia|Công[ \t]+ty)[ \t]+{_PARTNERS}")


def _firm_named(value: str) -> bool:
    form = re.search(rf"{_LEGAL_FORM}$", value)
    if form and ("." in form.group() or len(form.group()) >= 4):
        return True
    return any(not is_common(w) and not is_clinical(w) and len(w) > 1 for w in _NAME_WORD.findall(value)[:-1])


# Partners named together: "Cole, Rivas and Carter", "Lääts, Koit and Susi" (people or their firm; either way
# names). Two of the three words are no everyday word, and none is clinical ("Xarelto, Eliquis and Pradaxa").
_THREE_NAMES = re.compile(rf"\b{_ANY_CAP},[ \t]+{_ANY_CAP},?[ \t]+{_AND}[ \t]+{_ANY_CAP}(?![\w'’])")


def _names_listed(value: str) -> bool:
    words = [w for w in _NAME_WORD.findall(value) if w[0].isupper()]
    return sum(not is_common(w) for w in words) >= 2 and not any(is_clinical(w) for w in words)


# A firm after the words that introduce an employer or an insurer: "Employer: Růžička", "works at Ray Brothers",
# "insurance is through Kovács".
_EMPLOYER = re.compile(
    r"(?i:\b(?:employer|company|firm|insurer|carrier|works?(?:\s+as\s+an?\s+\w+)?\s+(?:at|for)|employed\s+(?:by|at|with)|"
    r"insurance\s+(?:is\s+)?(?:through|with|from)|insured\s+(?:by|with|through))\s*:?\s+)"
    rf"(?P<v>{_PARTNERS})"
)


# A place of care named after where a patient was: "seen at County General", "admitted to Central Health". Heads
# that also name services or ranks ("General", "Health") count only here, after "at", "@" or "admitted to", and even
# with an everyday word before them (a hospital's name often is one: "Central", "County", "Memorial").
_CARED_AT = re.compile(
    r"(?:\b(?i:at|(?:admitted|transferred|taken|brought|rushed|readmitted)[ \t]+to)|(?<!\S)@)[ \t]+(?:the[ \t]+)?"
    r"(?P<v>(?:[A-Z][\w'’\-]*[ \t]+){1,3}(?:General|Health|Healthcare|Memorial)(?:[ \t]+(?:Hospital|Campus))?)(?![\w'’])"
)


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
        RegexRecognizer("LOCATION", [(_CARED_AT, 0.7)], name="SiloCaredAt"),
        RegexRecognizer("LOCATION", [(_CARE_INITIALISM, 0.75)], validate=_names_a_place, name="SiloCareInitialism"),
        CarePlaceRecognizer(),
        RegexRecognizer("ORGANIZATION", [(_FIRM, 0.75), (_FORM_FIRST, 0.7)], validate=_firm_named, name="SiloFirm"),
        RegexRecognizer("PERSON", [(_THREE_NAMES, 0.7)], validate=_names_listed, name="SiloPartners"),
        RegexRecognizer("ORGANIZATION", [(_EMPLOYER, 0.7)], validate=_names_a_place, name="SiloEmployer"),
        RegexRecognizer(
            "ORGANIZATION",
            [(re.compile(rf"\b{_NAME},?[ \t]+{_ORG_HEAD}\b\.?"), 0.7)],
            validate=_named,
            name="SiloOrganisation",
        ),
    ]
