"""Names that capitalisation does not show: lower-case names in chat after a cue only a name follows, two
lower-case words side by side that English never uses, and runs of letters from scripts without capitals."""

from __future__ import annotations

import re

from client.recognizers.vocabulary import is_clinical, is_common, is_rare, zipf

# Letters of scripts without capitals (Han, kana, Hangul, Arabic, Hebrew, the Indic scripts, Thai, Georgian,
# Ethiopic): in English text a run of them is a name or a place written in its own script ("王伟", "김민준",
# "محمد علي"), or a phrase of another language; capitalisation cannot tell which, so all of them are masked.
_CASELESS = (
    "\u0590-\u05ff\u0600-\u06ff\u0750-\u077f\u0900-\u0dff\u0e00-\u0eff\u10d0-\u10ff\u1100-\u11ff"
    "\u1200-\u137f\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
)
_CASELESS_RUN = re.compile(
    rf"[{_CASELESS}][{_CASELESS}\u0300-\u036f·・]*(?:[ \t][{_CASELESS}][{_CASELESS}·・]*){{0,3}}"
)
# A cue that only a name follows, written in lower case in chat: "my name is kaarel tamm", "thanks, jaan".
_LOWER_NAME_CUE = re.compile(
    r"(?i:\b(?:my\s+name\s+is|name\s*:|this\s+is|i\s+am|i'm|im|thanks(?:\s+again)?|thank\s+you|regards|cheers|"
    r"signed(?:\s+off)?(?:\s+by)?\s*:?|ask\s+for|speak\s+to|spoke\s+(?:to|with)|call\s+me|dear|hi|hello|hey|"
    r"(?:notes|written|seen|referred|reviewed)\s+by|visitors?\s*:|present\s+were|"
    r"(?:daughter|son|wife|husband|mother|father|sister|brother|partner|spouse|niece|nephew|friend),?))"
    # a whole word ("hi", not the start of "Hispanic"), then a letter of any script (lower case: checked below)
    r"(?!(?<=\w)\w)[ \t,]*(?=[^\W\d_])"
)
_LOWER_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)?")


def lower_case_names(text: str, names: frozenset[str]) -> list[tuple[str, int, int, float]]:
    """Lower-case names after a cue only a name follows: up to three words, each listed or no word of English."""
    out = []
    for cue in _LOWER_NAME_CUE.finditer(text):
        pos, end = cue.end(), cue.end()
        for _ in range(3):
            m = _LOWER_WORD.match(text, pos)
            word = m.group() if m else ""
            if (
                not m
                or not word[0].islower()
                or is_common(word)
                or not ((word in names and zipf(word) < LOWER_GIVEN_ZIPF) or is_rare(word))
            ):
                break
            end = m.end()
            pos = end + 1 if text[end : end + 1] == " " else len(text) + 1
        if end > cue.end():
            out.append(("PERSON", cue.end(), end, 0.7))
    for m in _LOWER_BEFORE_VERB.finditer(text):
        word = m.group()
        if (
            not is_common(word)
            and not is_clinical(word)
            and (is_rare(word) or (word in names and zipf(word) < LOWER_SURNAME_ZIPF))
        ):
            out.append(("PERSON", m.start(), m.end(), 0.7))
    for m in _LOWER_PAIR.finditer(text):
        first, last = m.group("first"), m.group("last")
        listed = first in names and _lower_given(first)
        if (listed or zipf(first) < UNKNOWN_PAIR_ZIPF) and _lower_surname(last, names, unknown=not listed):
            out.append(("PERSON", m.start(), m.end("last"), 0.7))
    return out


# Two lower-case words in chat where a name would be: "ok so maria nevalainen will", "with ekene ojukwu".
_LOWER_PAIR = re.compile(r"(?<![\w@.\-])(?P<first>[a-zß-ÿ][^\W\d_]{2,})(?= (?P<last>[a-zß-ÿ][^\W\d_]{2,})(?![\w@\-]))")
# One lower-case word before what only a person does, in chat: "ramesh phoned about his card", "so lucía said"
# (not "called": "air sacs called alveoli").
_LOWER_BEFORE_VERB = re.compile(
    r"(?<![\w@.\-'’])[a-zß-ÿ][^\W\d_]{2,}(?= (?:said|says|told|asked|wrote|phoned|rang|texted|emailed|"
    r"replied|mentioned|confirmed|agreed|promised|thinks|thought|wants|wanted)\b)"
)
# A listed given name more frequent than this in English is mostly a word ("will", "mark", "grant": 5 and more).
LOWER_GIVEN_ZIPF = 4.5
# A surname below this is no everyday word ("nevalainen" 0, "ojukwu" 1.2); a listed one may be a little more
# frequent ("jacobsen" 2.7).
LOWER_SURNAME_ZIPF, LOWER_LISTED_SURNAME_ZIPF = 2.5, 3.5
# Two words side by side that English (almost) never uses, neither clinical, are a name in lower case
# ("maarit hietala"); clinical pairs are more frequent ("pleural effusion": 2.3 and 2.0).
UNKNOWN_PAIR_ZIPF = 1.5


def _lower_given(word: str) -> bool:
    return not is_common(word) and zipf(word) < LOWER_GIVEN_ZIPF


def _lower_surname(word: str, names: frozenset[str], *, unknown: bool) -> bool:
    if is_common(word) or is_clinical(word):
        return False
    if unknown:  # after an unlisted first word, both must be unknown to English ("maarit hietala")
        return zipf(word) < UNKNOWN_PAIR_ZIPF and not is_clinical(word)
    return zipf(word) < (LOWER_LISTED_SURNAME_ZIPF if word in names else LOWER_SURNAME_ZIPF)


def caseless_names(text: str) -> list[tuple[str, int, int, float]]:
    """Runs of letters from scripts without capitals, masked as names."""
    return [("PERSON", m.start(), m.end(), 0.6) for m in _CASELESS_RUN.finditer(text)]
