"""Courtesy titles and post-nominal letters around a person's name.

A title beside a name tells its bearer's gender or profession ("Mrs.", "Dr", "Prof."), a quasi-identifier, and
labelled de-identification sets count it as part of the name: `name_extent` widens every person found over the
titles written before it and the degrees after it ("Prof. Dr. Teodora Vukić, MD, PhD"). A title with no name
stays. `titled_names` finds the name after a title written in any case ("dr. smith", "MRS. HALVORSEN"), which
the capitalised-run recognizer does not see, and `name_core` is a name without them, so that a pseudonym is the
same for "Mrs. Okafor" and "Okafor".
"""

from __future__ import annotations

import re

from spacy.lang.en.stop_words import STOP_WORDS

from client.recognizers.pattern import gated
from client.recognizers.vocabulary import is_clinical, name_tokens, zipf

# Courtesy titles as written before a capitalised name ("Dr. Park", "Mrs Okafor", "Herr Weiß", "Sra. Ruiz").
TITLE = r"(?:Dr|Mr|Mrs|Ms|Mx|Miss|Mister|Prof|Professor|Rev|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra|Srta)\.?"
# Titles, ranks and honorifics that go with the name after them, in any case ("DR.", "dr"): next to a name found
# by other evidence, even a word that is also something else ("Col." a column, "Sr" senior) is its title.
_ANY_TITLE = (
    r"Dr|Doctor|Mr|Mrs|Ms|Mx|Miss|Mister|Master|Prof|Professor|Rev|Revd|Reverend|Fr|Father|Sir|Dame|Lady|Lord|"
    r"Herr|Frau|Mme|Mlle|Madame|Monsieur|Sr|Sra|Srta|Señor|Señora|Sig|Sig\.ra|Dott|Dott\.ssa|Capt|Captain|Sgt|"
    r"Lt|Col|Maj|Gen|Cpl|Pvt|Hon|Judge|Imam|Rabbi|Pastor|Sister|Brother"
)
_TITLE_BEFORE = re.compile(rf"(?<![\w.])(?i:{_ANY_TITLE})\.?[ \t]{{1,2}}$")
# Degrees, licences and generational suffixes after a name, alone or in a list ("Tao Xu, MD, PhD", "Jr.").
# Case-sensitive: "do" and "np" are words, "DO" and "NP" after a name are not.
_POST_NOMINAL = re.compile(
    r"(?:,?[ \t]*(?:MD|M\.D\.|DO|D\.O\.|PhD|Ph\.D\.|RN|BSN|NP|APRN|CRNA|DNP|PA-C|PA|DDS|DMD|FNP|FNP-BC|LPN|MBBS|"
    r"MBChB|FRCP|FRCS|FRCPC|FACS|FACP|FACC|MPH|MSc|PharmD|DPM|LCSW|Esq\.?|Jr\.?|Sr\.?|II|III))+(?![\w\-])"
)
# Titles that start a name in any case: after one of these, a word that is no everyday word is a name. Without
# their dot the short ones are words or abbreviations too ("ms" multiple sclerosis, "dr" drive, "sir", "prof"):
# then only a listed name counts ("ms smith", not "ms fatigue").
_STARTER = re.compile(
    r"(?<![\w.])(?P<t>(?i:dr|mr|mrs|ms|mx|miss|mister|prof|professor|rev|herr|frau|mme|mlle|sra|srta|madame|"
    r"monsieur))(?P<dot>\.?)[ \t]{1,2}(?=[^\W\d_])"
)
_UNDOTTED_OK = frozenset(
    ["mr", "mrs", "mx", "mister", "professor", "herr", "frau", "mme", "mlle", "madame", "monsieur"]
)
_GAP, _INITIAL_GAP = re.compile(r"[ \t]"), re.compile(r"\.?[ \t]")
_NAME_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’‘\-](?=[^\W\d_]))*")
# A word used less often than this in English is no everyday word after a title: "halvorsen" 2.0, "jones"
# (listed) 4.7 either way, but "appointment" 4.3 and "office" 5.1 are what a "dr." may be followed by in chat.
TITLED_ZIPF = 4.0
# Capitalised right after a title, a word is a name unless it is one of English's most frequent: "Dr. Ruiz",
# "mrs. Halvorsen", but not "Mrs. Please" ("please" 5.6).
CAPITALISED_ZIPF = 5.0


def name_extent(text: str, start: int, end: int) -> tuple[int, int]:
    """A person found at `[start, end)` widened over up to two titles before it and the post-nominals after."""
    for _ in range(2):  # "Prof. Dr. Müller"
        m = _TITLE_BEFORE.search(text, max(0, start - 24), start)
        if m is None or m.end() != start:
            break
        start = m.start()
    m = _POST_NOMINAL.match(text, end)
    return start, (m.end() if m else end)


def name_core(value: str) -> str:
    """`value` without the titles before it and the post-nominals after it (the value itself if nothing is left)."""
    start, end = 0, len(value)
    while m := re.match(rf"(?i:{_ANY_TITLE})\.?[ \t]+", value[start:]):
        start += m.end()
    tail = re.search(rf"{_POST_NOMINAL.pattern}$", value[start:])
    if tail and tail.start() > 0:
        end = start + tail.start()
    return value[start:end].strip() or value


def _name_word(word: str, *, strict: bool, first: bool) -> bool:
    low = word.casefold().removesuffix("'s").removesuffix("’s")
    if len(low) < 2 or low in STOP_WORDS or is_clinical(low):
        return False
    if low in name_tokens():
        return True
    if strict:
        return False
    if first and word[0].isupper() and not word.isupper():
        return zipf(low) < CAPITALISED_ZIPF
    return zipf(low) < TITLED_ZIPF


def titled_names(text: str) -> list[tuple[str, int, int, float]]:
    """Names written after a title, in any case: up to three name-like words, initials between them."""
    out = []
    for m in gated(_STARTER).finditer(text):
        strict = not m.group("dot") and m.group("t").casefold() not in _UNDOTTED_OK
        pos = end = m.end()
        words = 0
        while words < 3 and (w := _NAME_WORD.match(text, pos)):
            initial = len(w.group()) == 1
            if not initial and not _name_word(w.group(), strict=strict, first=words == 0):
                break
            words += not initial
            end = w.end() if not initial else end
            # The next word follows a space, or an initial's dot and a space ("dr. k. smith").
            gap = (_INITIAL_GAP if initial else _GAP).match(text, w.end())
            if gap is None:
                break
            pos = gap.end()
        if end > m.end():
            out.append(("PERSON", m.end(), end, 0.85))
    return out
