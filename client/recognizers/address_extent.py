"""What is written around an address that its patterns leave out: the unit, floor and door beside the street
and house number (each locale orders them differently), a province's code in brackets, and the town, region and
postcode after it. `address_extent` widens every place found over them."""

from __future__ import annotations

import re

from spacy.lang.en.stop_words import STOP_WORDS

from client.recognizers.addresses import LOWER_TOWN_ZIPF, STREET_TYPES
from client.recognizers.vocabulary import is_common, zipf

# What follows a street and house number inside one address, in many locales: a unit, floor, staircase or
# door ("Apt. 31", "bus 2", "4. tv", "3º B", "bl. 3, ap. 7", "8 B 12"), a lone letter or number.
_UNIT_WORDS = (
    r"(?i:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Level|Lvl|Room|Rm|Bldg|Building|Block|Blk|Lot|Shop|"
    r"bl|ap|app|apto|lgh|bus|bte|boks|et|etg|etage|Stiege|Stg|Tür|Top|piso|planta|puerta|pta|esc|int|interno|"
    r"scala|sc|lok|m|kat|stan|nr|No|n[°º]|dpto|depto|departamento|casa|torre|bloque|bloco|portal|oficina|of|"
    r"local|lote|mz|manzana|sala|andar|lt|rt|rw|dto|appartamento|apartamento|interior|studio|piano|b|m|k|kv|d)"
)
_ADDRESS_TAIL = re.compile(
    rf"(?:,[ \t]*|[ \t]+)(?:{_UNIT_WORDS}\.?[ \t]*#?[ \t]*[0-9][0-9A-Za-z\-/]{{0,5}}|\d{{1,4}}[A-Za-z]?[.ºª°]?"
    rf"(?:[ \t]+[a-z]{{1,3}}\.?(?=[ \t]*(?:,|$|\n)))?|[A-Z](?![\w'’])|(?i:s/n))(?![\w'’\-])"
)
# A building or flat after a street written without its number: "HÜSEYN ARİF pr., b. 0, m. 3".
_UNIT_TAIL = re.compile(
    rf"(?:(?:,[ \t]*|[ \t]+){_UNIT_WORDS}\.?[ \t]*#?[ \t]*[0-9][0-9A-Za-z\-/]{{0,5}}(?![\w'’\-])){{1,4}}"
)
# A unit before the house number: "Unit 4, 27 Wattle Grove", "Flat 2B 14 Kings Road".
_ADDRESS_HEAD = re.compile(
    r"\b(?i:Unit|Flat|Apt\.?|Apartment|Suite|Ste\.?|Lot|Shop|Level|Studio)[ \t]+[0-9][0-9A-Za-z\-/]{0,5},?[ \t]*\n?[ \t]*$"
)


# A province's or county's code in brackets after its town: "Serravalle (TN)", "Ludlow (Salop)".
_PROVINCE_AFTER = re.compile(r"[ \t]*\([A-Z][A-Za-z]{1,5}\.?\)")


def address_extent(text: str, start: int, end: int) -> tuple[int, int]:
    """A street address found at `[start, end)` widened over the unit, floor and door parts around it, which
    the address patterns leave out (each locale orders them differently), and a province's code in brackets
    after a town ("Pinzano (PN)")."""
    province = _PROVINCE_AFTER.match(text, end)
    if province:
        end = province.end()
    if not any(c.isdigit() for c in text[start:end]):  # a town or a street without its number: a unit joins,
        unit = _UNIT_TAIL.match(text, end)  # and the town or region after a comma ("Houston, Texas", "Elm
        if unit:  # Street, Denver", "Mercy Hospital, Leeds", "Oslo, Norway 0150")
            return start, unit.end()
        return start, (_address_rest(text, end, parts=TOWN_REST_PARTS) if text.startswith(",", end) else end)
    head = _ADDRESS_HEAD.search(text, max(0, start - 24), start)
    if head and head.end() == start:
        start = head.start()
    for _ in range(4):  # a unit, a floor, a door: a few parts at most
        m = _ADDRESS_TAIL.match(text, end)
        if not m:
            break
        end = m.end()
    return start, _address_rest(text, end)


# After a street address, the parts that follow it, each after a comma or a slash: a town, a state's code, a
# postcode ("41 vanessa roadside, nicoleberg, nt, 2619", "..., bandung, jawa barat 46685", "... / ma").
_REST_SEPARATOR = re.compile(r"\.?[ \t]*[,/][ \t]*|[ \t]+(?=\d)")
_SPACES = re.compile(r"[ \t]+")
_REST_WORD = re.compile(r"[^\W_][\w'’.\-]*|\([A-Za-z]{2,4}\)")
# A town's name may start with these everyday words ("new aleksandr", "lake christopher", "east çapkan").
_TOWN_PREFIX_WORDS = "new north south east west upper lower old great little lake port mount fort saint st san santa"
_TOWN_PREFIXES = frozenset(_TOWN_PREFIX_WORDS.split())
# A town, state and postcode take a few words: past this it is prose again.
REST_PARTS, REST_WORDS = 4, 4
# After a town or a street with no number, its region and postcode at most: "Houston, TX 77002".
TOWN_REST_PARTS = 2


def _address_part_word(word: str) -> bool:
    """A word an address's town, region or postcode is made of: a code with digits, a short code, a word that is
    not everyday English (a street type or a town's prefix may be)."""
    word = word.rstrip(".")
    low = word.casefold().strip("()")
    if any(c.isdigit() for c in word):
        return len(word) <= 10
    if len(low) <= 3 and low.isalpha():
        return low not in STOP_WORDS
    if low in STREET_TYPES or low in _TOWN_PREFIXES:
        return True
    # A lower-case word English uses often goes on the sentence ("..., Springfield, filed a complaint").
    return not is_common(word) and not (word[0].islower() and zipf(word) >= LOWER_TOWN_ZIPF)


def _address_rest(text: str, end: int, *, parts: int = REST_PARTS) -> int:
    """`end` moved over the town, region and postcode parts after an address (at most `parts` of them), word by
    word; it stops at the first word that is prose."""
    for _ in range(parts):
        sep = _REST_SEPARATOR.match(text, end)
        if not sep:
            break
        pos, words = sep.end(), 0
        while words < REST_WORDS:
            m = _REST_WORD.match(text, pos)
            if not m or not _address_part_word(m.group()) or text.startswith(":", m.end()):
                break  # prose, or a label ("GPA: 3.8")
            word = m.group()
            end, words = m.end() - (word.endswith(".") and not word[:-1].isalpha()), words + 1
            if word.endswith("."):
                break  # the sentence may end here: only a comma goes on ("utca 45., h-7776 ...")
            space = _SPACES.match(text, m.end())
            pos = space.end() if space else m.end()
        if words == 0:
            break
    return end
