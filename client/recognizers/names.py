"""People and places without NER: capitalised runs scored by context, name lists, rarity, and propagation.

`NamePlaceRecognizer` finds people and places from context (titles, "Patient:", salutations, signatures,
relatives, "lives in", "City, ST 12345", postcodes), from name lists, and by propagating every name or place
found to its other mentions in the same text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache, lru_cache

import regex
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from spacy.lang.en.stop_words import STOP_WORDS

from client.recognizers.addresses import US_STATE_CODES
from client.recognizers.titles import TITLE, titled_names
from client.recognizers.uncased import caseless_names, lower_case_names
from client.recognizers.vocabulary import countries, given_names, is_clinical, is_common, is_rare, name_tokens, zipf

# (Uzbek and Hawaiian write a letter's apostrophe as ‘ or ʻ: "Ulug‘bekov".)
_WORD = re.compile(r"(?<!\w)[^\W\d_](?:[^\W\d_]|['’‘ʻ\-](?=[^\W\d_]))*")
# A capitalised word glued to digits is a code or a measure ("SpO2", "HbA1c", "Emily2023"), not a name.
_CODE_WORD = re.compile(r"[^\W\d_][\w'’\-]*\d")
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
        # a town's particles: "Frankfurt am Main", "Beuchat sur Rhône" ("an" is English too)
        "am",
        "im",
        "ob",
        "bei",
        "sur",
        "sous",
    ]
)
_STRONG_PERSON_BEFORE = re.compile(
    rf"(?:\b{TITLE}\s+|"
    r"(?i:\b(?:patient|pt|name|patient\s+name|full\s+name|attending|prescriber|provider|physician|surgeon|"
    r"applicant|customer|client|sender|recipient|beneficiary|payee|holder|account|kin|contact|guardian|caregiver|for|"
    r"from|to|by|signed|cc|author|nurse|RN|technician|interpreter)\s*:\s*)|"
    r"(?i:\b(?:dear|hi|hello|hey|thanks|thank\s+you|regards|sincerely|faithfully|best|cheers|yours|love)\b[ \t,]*\n?[ \t]*)|"
    r"(?i:\b(?:daughter|son|wife|husband|mother|father|sister|brother|partner|spouse|fianc[ée]e?|grandson|"
    r"granddaughter|grandmother|grandfather|niece|nephew|aunt|uncle|cousin|friend|neighbou?r|roommate|"
    r"caregiver|sibling|parent|child)(?:\s*:?\s+|\s*\(\s*))|"  # "daughter: Mei", "daughter (Saoirse)"
    r"(?i:\b(?:this\s+is|my\s+name\s+is|i\s+am|i'm|identified\s+as|spoke\s+with|seen\s+by|seeing|named|"
    r"called|signed\s+by|dictated\s+by|read\s+by|referred\s+by|accompanied\s+by|met\s+with)\s+)|"
    r"(?:^|\n)\s*(?:--|—)\s*)$"
)
_TITLE_BEFORE = re.compile(rf"\b{TITLE}\s+$")
_TITLE_WORD = re.compile(TITLE.removesuffix(r"\.?"))
_WEAK_PERSON_BEFORE = re.compile(r"(?i:\b(?:by|with|to|for|from|and|of|as|&)\s+)$")
# "..., MD", "X is a 72-year-old", "X lives in", "X, aged 93": what only a person does.
_STRONG_PERSON_AFTER = re.compile(
    r"^(?:,?\s*(?:MD|M\.D\.|RN|DO|NP|PA-C|PA|PhD|DDS|DMD|FNP|LPN|CNA|MBBS|FRCP|Esq)\b|\s+(?:is|was)\s+an?\s+\d|"
    r"\s+(?:lives|lived|resides|resided|works|worked|reports|reported|presents|presented|denies|denied|states|"
    r"stated|complains|says|said|feels|felt|notes|noted|was\s+seen|was\s+admitted|was\s+treated)\b|"
    r",\s+(?:a|an|aged?|born|DOB|d\.o\.b\.)\s|"
    # "Grethe (her niece)", "Ali (son)": a relative in brackets after the name.
    r"\s*\((?:(?:her|his|their|the|pt'?s|patient'?s)\s+)?(?:daughter|son|wife|husband|mother|father|sister|brother|"
    r"partner|spouse|niece|nephew|aunt|uncle|cousin|friend|neighbou?r|grand\w+|guardian|carer|caregiver)\b)"
)
_STRONG_PLACE_BEFORE = re.compile(
    r"(?i:\b(?:lives|living|live|lived|resides|residing|resident|moved|relocated|born|raised|located|based|"
    r"grew\s+up|hometown|city\s+of|town\s+of|village\s+of|county\s+of|visiting|travell?ed)\s+"
    r"(?:(?:in|at|to|of|near|from)\s+)?(?:the\s+)?)$"
)
# "seen at Stanford", "admitted to Cedars-Sinai": where a patient was cared for.
_FACILITY_BEFORE = re.compile(
    r"(?i:\b(?:seen|treated|admitted|presented|evaluated|visited|attended|transferred|referred|operated|"
    r"diagnosed|followed|hospitali[sz]ed|discharged|scanned|imaged|delivered)(?:\s+on)?\s+(?:at|@|to|from|in)\s+"
    r"(?:the\s+)?)$"
)
# An upper-case letter of any script ("Lind", "Øberg", "Федосий"): a character class of every one in the BMP.
_UPPER = "[" + "".join(re.escape(chr(c)) for c in range(0x10000) if chr(c).isupper()) + "]"
# What follows a cue-less name at a sentence start: "Halvorsen had moved", "Halvorsen, from ...", "Halvorsen and
# Lind".
_PERSON_VERB_AFTER = re.compile(
    r"^(?:,\s|\s+(?:and|&)\s+"
    + _UPPER
    + r"|\s+(?:had|has|was|is|will|would|could|can|did|does|said|says|told|called|wrote|asked|lives|"
    r"lived|moved|works|worked|came|went|remains|stayed|agreed|declined|returned|arrived|left|joined|chaired|"
    r"thanked|signed|sent|phoned|emailed|(?!(?:need|feed|seed|bleed|breed|speed|red|bed|shed|wed)\b)[a-z]{2,}ed)\b)"
)
# A romanised East Asian given name: two syllables of two to five letters, each with a vowel, joined by a hyphen,
# in capitals as on a passport or not ("KUO-HUA", "Ya-Ting", "MIN-JUN"). Not an English compound: a first part
# that is an English prefix ("Anti-Xa", "Post-Op", "Co-Op") or one letter ("X-Ray") is not one.
_ROMANISED_GIVEN = re.compile(
    r"(?!(?i:anti|non|pro|post|pre|co|re|sub|semi|multi|self|ex|mid|inter|intra|over|under|out|up|down|de)-)"
    r"(?=[A-Za-z]*[AEIOUaeiou][A-Za-z]*-[A-Za-z]*[AEIOUaeiou])(?:[A-Z]{2,5}-[A-Z]{2,5}|[A-Z][a-z]{1,4}-[A-Z][a-z]{1,4})"
)
# "Jane's position", "Halvorsen's daughter": a possessive after a name that may start a sentence.
_POSSESSIVE = re.compile(r"['’]s$")
# An eponym names a disease, a sign or a test, not a person: "Crohn's disease", "Bell's palsy".
_EPONYM_AFTER = re.compile(
    r"^[ \t]+(?i:disease|syndrome|palsy|lymphoma|sarcoma|tumou?r|ulcer|sign|test|phenomenon|disorder|flare|"
    r"contracture|criteria|classification|score|law|procedure|operation|fracture|anomaly|encephalopathy)\b"
)
# Below this a capitalised word is no everyday word of English, though names use it ("Hussein" 3.5, "Louisa"
# 3.3, "Dianne" 3.0, "Larsson" 3.0); in a name's place (mid-sentence, before a verb) it is taken as one.
NAME_ZIPF = 3.6
_CAMEL = re.compile(r"[^\W\d_][^\W\d_A-Z]{3,}[A-Z]")
_CAPITALS = re.compile(r"[A-Z]{2}")  # an initialism inside a word: "Pro-BNP", "BSc", "SEs"
# A first word that begins a place's name, not a person's: "New Haven", "San Jose", "Fort Worth", "Lake Bled".
_PLACE_PREFIX_WORDS = (
    "new north south east west upper lower san santa los las fort port mount lake saint st great little el la le"
)
_PLACE_PREFIX = frozenset(_PLACE_PREFIX_WORDS.split())
# "@" is "at" in notes ("seen @ Stanford").
_WEAK_PLACE_BEFORE = re.compile(r"(?i:(?:\b(?:in|at|near|around|outside|towards?|from)|(?<!\S)@)\s+)$")
# ", Boston" after an institution: the institution's town.
_INSTITUTION_BEFORE = re.compile(
    r"(?:Hospital|Medical\s+Center|Center|Centre|Clinic|Practice|Infirmary|Home|Hospice|University|Bank|"
    r"Branch|Office)\s*,\s*$"
)
_STATE_AFTER = re.compile(
    r"^,\s*(?:" + "|".join(sorted(US_STATE_CODES)) + r")(?:\s+\d{5}(?:-\d{4})?(?!\w)|\s*[.,;\n?!)]|$|\s+[a-z])"
)
# A town follows its postcode in most of the world: "49522 Neuss", "114 28 Stockholm", "00-950 Warszawa",
# "1100-148 Lisboa", "H-3914 Tokaj", "2100 København" (four digits only after a comma or a line start: a year
# in prose is four digits too), "K1A 0B1 Ottawa".
_POSTCODE_BEFORE = re.compile(
    r"(?:\b\d{5}|\b\d{4}\s?[A-Z]{2},?|\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|\b\d{3}[ \t]\d{2}|\b\d{2}-\d{3}|"
    r"\b\d{4}-\d{3}|\b[A-Z]{1,2}-\d{4,5}|(?:^|\n|,[ \t])[ \t]*\d{4,6}|\b[A-Z]\d[A-Z][ \t]?\d[A-Z]\d)[ \t]+$|"
    # "..., 38061, Serravalle": five digits between commas (no year) before the town.
    r",[ \t]\d{5},[ \t]+$"
)
# "... on May 4, 2023 Metformin": a date's year, not a postcode, before a capitalised word.
_DATE_BEFORE = re.compile(r"(?i:\b[a-z]{3,9}\.?[ \t]+\d{1,2}(?:st|nd|rd|th)?,[ \t]*\d{4}[ \t]+)$")
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


@cache
def _from_the_end(pattern: re.Pattern[str]) -> regex.Pattern[str]:
    """`pattern` for the `regex` engine, matched right to left (`REVERSE`, with `re`'s semantics: `V0`). A
    `$`-anchored pattern then fails at once at every position but the window's end, where Python's engine
    works through the pattern's head at each position first (2.3x the time over these context checks)."""
    return regex.compile(pattern.pattern, pattern.flags | regex.REVERSE | regex.V0)


@lru_cache(maxsize=16384)
def _ends(pattern: re.Pattern[str], before: str) -> bool:
    """`pattern` (anchored at `$`) matches at the end of `before`. Cached: the same windows recur (several
    checks of one run, the second pass over a scrubbed text)."""
    return _from_the_end(pattern).search(before) is not None


def _given(word: str) -> bool:
    return not word.isupper() and word.casefold() in given_names()


def _sentence_initial(text: str, start: int) -> bool:
    i = start
    while i > 0 and text[i - 1] in " \t":  # (not `text[:start].rstrip()`: that is quadratic over a text)
        i -= 1
    if i > 0 and text[i - 1] in "-*•" and (i == 1 or text[i - 2] in "\n\t "):  # a list's bullet starts one too
        return _sentence_initial(text, i - 1)
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
            cap = word[0].isupper() and not _CODE_WORD.match(text, m.start())
            gap = text[run[-1].end() : m.start()] if run else ""
            # An initial joins the name around it: "Dr. L. Wang", "Jane A. Doe".
            initial = len(run[-1].group()) == 1 and run[-1].group().isupper() if run else False
            joined = bool(run) and (gap in (" ", "", "  ") or (initial and gap == ". "))
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
            # A place cue covers codes too ("at NYU Langone", "at MD Anderson").
            full = run[0].start() if run else 0
            while run and run[0].group().isupper() and 1 < len(run[0].group()) <= 3:  # "AQ Eijsden": codes first
                run.pop(0)
            hit = self._anchored(text, run) if run else None
            if hit is None and run:
                # Leading common words are not part of the name ("Daughter Ross", "Thanks Mary"), but a place
                # prefix is part of a place's ("New York", "San Jose").
                popped = None
                while run and is_common(run[0].group()) and run[0].group().casefold() not in self._names:
                    if run[0].group().casefold() in _PLACE_PREFIX and len(run) > 1:
                        break
                    popped = run.pop(0)
                hit = self._classify(text, run, full) if run else None
                # ... unless it is a given name right before the surname found: "Bill Stone", "Grace Halvorsen".
                if hit and hit[0] == "PERSON" and popped and hit[1] == run[0].start() and _given(popped.group()):
                    hit = ("PERSON", popped.start(), *hit[2:])
            if hit:
                found.append(hit)
        # Found without a cue, a word of English the text itself writes in lower case is an ordinary word here
        # ("Chemotherapy is ...", then "... after chemotherapy"), and a country or a continent is kept ("money from
        # China", "travelling in Europe").
        lower = lower_case_words(text) if any(f[3] < CUED_SCORE for f in found) else frozenset()
        found = [f for f in found if f[3] >= CUED_SCORE or not (_ordinary_here(text, f, lower) or _country(f, text))]
        found.extend(lower_case_names(text, self._names))
        found.extend(titled_names(text))
        found.extend(caseless_names(text))
        found.extend(coordinated_names(text, found))
        found.extend(propagate_mentions(text, found, lower=lower or None))
        return [RecognizerResult(t, s, e, score) for t, s, e, score in found]

    def _anchored(self, text: str, run: list[re.Match[str]]) -> tuple[str, int, int, float] | None:
        """Runs with an unambiguous anchor: the words may be ordinary ones ("Little Rock", "Dr. Will Rose")."""
        start, end = run[0].start(), run[-1].end()
        if all(m.group().isupper() and len(m.group()) <= 3 for m in run):  # "USD", "MRN": codes, not names
            return None
        before, after = text[max(0, start - 48) : start], text[end : end + 16]
        if _ends(_TITLE_BEFORE, before) or _ends(_LABEL_COMMA, before):
            return ("PERSON", start, self._extend_last_first(text, before, end), 0.85)
        if len(run) > 1 and _TITLE_WORD.fullmatch(run[0].group()):  # "Dr Park", "Mr Banks" (`name_extent` adds "Dr")
            return ("PERSON", run[1].start(), end, 0.85)
        if _ends(_STRONG_PERSON_BEFORE, before):  # "Attending: Tao Xu, MD" is not in Maryland
            return None
        if _STATE_AFTER.match(after):  # the state goes with its town: "Springfield, IL" names one place
            return ("LOCATION", start, end + re.match(r",\s*[A-Z]{2}", after).end(), 0.85)  # type: ignore[union-attr]
        if _ends(_INSTITUTION_BEFORE, before) or (_ends(_POSTCODE_BEFORE, before) and not _ends(_DATE_BEFORE, before)):
            return ("LOCATION", start, end, 0.85)
        return None

    def _classify(self, text: str, run: list[re.Match[str]], full: int) -> tuple[str, int, int, float] | None:
        """`run` without its leading everyday words; `full` where the whole capitalised run started."""
        start, end = run[0].start(), run[-1].end()
        words = [m.group() for m in run if m.group()[0].isupper()]
        # Short all-capitals words are codes and states ("DE", "MRN"), never name evidence.
        uncommon = [
            w
            for w in words
            if len(w) > 1 and not is_common(w) and not is_clinical(w) and not (w.isupper() and len(w) <= 3)
        ]
        if not uncommon or words[-1].casefold() in _PLACE_SUFFIX:
            return None
        listed = sum(_POSSESSIVE.sub("", w).casefold() in self._names for w in uncommon)
        # Not a word of English at all (wordfreq): a name the lists do not know ("Halvorsen", "Vukić").
        rare = sum(not w.isupper() and is_rare(w) for w in uncommon)
        # Not an everyday word, though more frequent than a rare one: a name once it is where names go. Not a
        # field's label ("Insurer:"), a heading's word ("Project Kickoff": capitalised words before it), a product
        # in camel case ("JavaScript"; but "McKay", "DeShawn") or with an initialism ("Pro-BNP"), a possessive
        # ("Alzheimer's", "Bachelor's").
        unusual = rare or (
            full == start
            and text[end : end + 1] != ":"
            and any(
                not _CAPITALS.search(w) and not _CAMEL.match(w) and not _POSSESSIVE.search(w) and zipf(w) < NAME_ZIPF
                for w in uncommon
            )
        )
        if any(_ROMANISED_GIVEN.fullmatch(w) for w in words):  # "KUO-HUA TSAI", "Min-Jun Kim"
            return ("PERSON", start, end, 0.8)
        before, after = text[max(0, start - 48) : start], text[end : end + 24]
        cue = text[max(0, full - 48) : full]
        if _EPONYM_AFTER.match(after):  # "Crohn's disease", "Guillain-Barré syndrome", "Hodgkin lymphoma"
            return None
        # A double-barrelled name, each part a name ("Lee-Beasley", "Yeboah-Ankra"): as good as two words, unless
        # it names a disease ("Creutzfeldt-Jakob disease").
        if any(self._double_barrelled(w) for w in uncommon):
            return ("PERSON", start, end, 0.8)
        # The place cue covers the whole run: "moved to New York City", "admitted to Cedar Sinai".
        if _ends(_STRONG_PLACE_BEFORE, cue) or _ends(_FACILITY_BEFORE, cue):
            return ("LOCATION", full, end, 0.85)
        if _ends(_STRONG_PLACE_BEFORE, before) or _ends(_FACILITY_BEFORE, before):
            return ("LOCATION", start, end, 0.85)
        if words[0].casefold() in _PLACE_PREFIX and len(words) > 1 and not _ends(_STRONG_PERSON_BEFORE, before):
            return ("LOCATION", start, end, 0.7)
        if _ends(_STRONG_PERSON_BEFORE, before) or _STRONG_PERSON_AFTER.match(after):
            return ("PERSON", start, end, 0.85)
        if _ends(_WEAK_PLACE_BEFORE, cue) and not listed:
            return ("LOCATION", full, end, 0.6)
        if (listed or rare) and len(words) >= 2:
            return ("PERSON", start, end, 0.8)
        weak = bool(_ends(_WEAK_PERSON_BEFORE, before))
        initial = _sentence_initial(text, start)
        if (listed or unusual) and (weak or not initial):
            return ("PERSON", start, end, 0.7)
        if (unusual or listed) and (_PERSON_VERB_AFTER.match(after) or _POSSESSIVE.search(run[-1].group())):
            return ("PERSON", start, end, 0.6)
        if len(uncommon) >= 2 and not initial:
            return ("PERSON", start, end, 0.65 if weak else 0.55)
        if listed:
            return ("PERSON", start, end, 0.45)
        return None

    def _double_barrelled(self, word: str) -> bool:
        parts = word.split("-")
        return (
            len(parts) == 2
            and all(len(p) > 1 and p[0].isupper() and not p.isupper() for p in parts)
            and all(not is_common(p) and (p.casefold() in self._names or is_rare(p)) for p in parts)
        )

    @staticmethod
    def _extend_last_first(text: str, before: str, end: int) -> int:
        """After "Name:" a comma can separate last and first name ("Nelson, Eleanor", "NELSON, ELEANOR")."""
        if not _ends(_LABEL_COMMA, before):
            return end
        m = re.match(r", ?([A-Z][\w'’\-]*(?: [A-Z][a-z][\w'’\-]*)?)", text[end : end + 64])
        if m and not is_common(m.group(1).split()[0]):
            return end + m.end()
        return end


# A capitalised word of any script, and "and" or "or" between it and a name found: "Lund and Christensen".
_CAP_WORD = _UPPER + r"[^\W\d_]*(?:['’\-][^\W\d_]+)*"
_AND_AFTER = re.compile(rf"[ \t]+(?:and|or|&)[ \t]+({_CAP_WORD}(?:[ \t]{_CAP_WORD})?)")
_AND_BEFORE = re.compile(rf"(?<![\w'’\-])((?:{_CAP_WORD}[ \t])?{_CAP_WORD})[ \t]+(?:and|or|&)[ \t]+$")
# Beside a name, a word used less than this is another name ("Harding" 3.5, "Lund" 3.2, "Hussein" 3.5); a
# department is more frequent ("Compliance" 4.2, "Nursing" 4.3), and so are "Banks" and "Young" (4.7, 5.4).
COORDINATED_ZIPF = 4.0


def _coordinate(word: str, names: frozenset[str]) -> bool:
    low = _POSSESSIVE.sub("", word).casefold()
    if len(low) < 2 or word.isupper() or low in STOP_WORDS or is_clinical(low):
        return False
    return low in names or (not is_common(low) and zipf(low) < COORDINATED_ZIPF)


def coordinated_names(text: str, found: list[tuple[str, int, int, float]]) -> list[tuple[str, int, int, float]]:
    """A capitalised word joined by "and" or "or" to a person found ("Both Lund and Christensen", "Hettner and
    Hering"): two people named together."""
    names = name_tokens()
    out = []
    for etype, s, e, score in found:
        if etype != "PERSON" or score < 0.6:
            continue
        after = _AND_AFTER.match(text, e)
        if after:
            words = list(re.finditer(_CAP_WORD, after.group(1)))
            keep = next((i for i, w in enumerate(words) if not _coordinate(w.group(), names)), len(words))
            if keep:
                out.append(("PERSON", after.start(1), after.start(1) + words[keep - 1].end(), 0.7))
        before = _AND_BEFORE.search(text, max(0, s - 48), s)
        if before:
            words = list(re.finditer(_CAP_WORD, before.group(1)))
            while words and not _coordinate(words[0].group(), names):  # "Both Lund": "Both" is no name
                words.pop(0)
            if words and all(_coordinate(w.group(), names) for w in words):
                out.append(("PERSON", before.start(1) + words[0].start(), before.end(1), 0.7))
    return out


# A name found after a cue that only a name follows ("Dr.", "Patient:", a relative): its lower-case mentions are
# the name too ("Patient: Rose Halvorsen ... halvorsen said").
CUED_SCORE = 0.85


# A word of prose in lower case: not part of an address, a handle or a link ("john.smith@...", "@jsmith").
_PROSE_LOWER = re.compile(r"(?<![\w@.\-/'’‘ʻ])[^\W\d_]+(?![\w@\-/]|\.\w|['’‘ʻ]\w)")


def lower_case_words(text: str) -> frozenset[str]:
    """The words of English `text` writes in lower case in its prose. A word that is no word of English ("Okafor",
    "Halvorsen") stays a name however it is also written: a lower-case mention must not hide the capitalised ones."""
    return frozenset(w for w in _PROSE_LOWER.findall(text) if w.islower() and not is_rare(w))


def _country(found: tuple[str, int, int, float], text: str) -> bool:
    return found[0] == "LOCATION" and " ".join(text[found[1] : found[2]].split()).casefold() in countries()


def _ordinary_here(text: str, found: tuple[str, int, int, float], lower: frozenset[str]) -> bool:
    """Every capitalised word of `found` is written in lower case elsewhere in the text."""
    words = [w for w in _WORD.findall(text[found[1] : found[2]]) if w[0].isupper() and len(w) > 1]
    return bool(words) and all(w.casefold() in lower for w in words)


def propagate_mentions(
    text: str, found: list[tuple[str, int, int, float]], *, lower: frozenset[str] | None = None
) -> list[tuple[str, int, int, float]]:
    """Every other mention of a word already found as a name or place ("Ms. Nelson" ... "Nelson"). A word of
    English the text also writes in lower case is spread only from a cue ("Hodgkin Lymphoma" is no reason to
    remove every "lymphoma"; "Patient: Rose Halvorsen" is, to remove "halvorsen"). `lower`: the text's
    `lower_case_words`, when the caller has them."""
    seen: dict[str, str] = {}
    for etype, s, e, score in found:
        if score < 0.6:
            continue
        for w in _WORD.findall(text[s:e]):
            if len(w) > 2 and w[0].isupper() and not is_common(w):
                if score < CUED_SCORE:
                    lower = lower_case_words(text) if lower is None else lower
                    if w.casefold() in lower:
                        continue
                seen.setdefault(w.casefold(), etype)
    if not seen:
        return []
    return [
        (seen[m.group().casefold()], m.start(), m.end(), 0.7)
        for m in _WORD.finditer(text)
        if m.group().casefold() in seen
    ]
