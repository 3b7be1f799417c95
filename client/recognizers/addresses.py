"""Places by pattern: street addresses (US, European and other forms), postcodes, PO boxes and military mail."""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer
from spacy.lang.en.stop_words import STOP_WORDS

from client.recognizers.pattern import RegexRecognizer
from client.recognizers.vocabulary import is_clinical, is_common, is_rare, zipf

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
# Street types: the USPS suffix list (Publication 28, appendix C1) and Australia Post's (AS 4590), with their
# common abbreviations. A closed vocabulary of the address form, not of any one place.
_STREET_TYPE_WORDS = """
Street St Streets Avenue Ave Road Rd Roads Boulevard Blvd Lane Ln Drive Dr Drives Court Ct Courts Way Ways
Place Pl Terrace Ter Circle Cir Circles Parkway Pkwy Parkways Highway Hwy Square Sq Squares Trail Trl
Crescent Close Row Walk Walks Alley Loop Pike Path Run Pass Passage Plaza Crossing Crossroad Expressway
Freeway Turnpike Route Rte Routes Green Greens Grove Groves Garden Gardens Heights Parade Esplanade
Promenade Mews Rise Quay Quays Wynd Chase Hill Hills Park Parks Ridge Ridges Valley Valleys View Views
Village Villages Meadow Meadows Mill Mills Spring Springs Stravenue Mountain Mountains Mount Fork Forks
Harbor Harbors Harbour Harbours Island Islands Isle Lake Lakes Landing Manor Manors Estate Estates Point
Points Port Ports Shore Shores Station Stations Summit Tunnel Union Unions Well Wells Junction Junctions
Knoll Knolls Lock Locks Lodge Mall Motorway Oval Orchard Overpass Plain Plains Prairie Ramp Ranch Rapid
Rapids Rest Shoal Shoals Skyway Spur Spurs Track Tracks Trafficway Underpass Vista Bypass Camp Canyon
Cape Causeway Center Centers Centre Cliff Cliffs Club Common Corner Corners Course Cove Coves Creek Crest
Curve Dale Dam Divide Extension Extensions Fall Falls Ferry Field Fields Flat Flats Ford Fords Forest
Forge Forges Fort Gateway Glen Glens Haven Hollow Inlet Key Keys Land Light Lights Loaf Mission Neck
Pine Pines Radial Ridge River Stream Throughway Trace Viaduct Ville Wall Branch Bridge Brook Brooks Burg
Burgs Bluff Bluffs Bottom Access Alleyway Amble Anchorage Approach Arcade Basin Beach Bend Brae Broadway
Brow Byway Circuit Circus Colonnade Concourse Copse Courtyard Crossway Cul-de-sac Cutting Dell Driveway
Fairway Footway Foreshore Frontage Glade Grange Gully Highroad Laneway Lookout Meander Nook Outlook
Parklands Pathway Plateau Quadrant Ramble Reserve Retreat Ridgeway Riverway Riviera Roadway Roadside Rotary
Siding Strand Thoroughfare Tollway Tor Towers Vale Villas Walkway Isitaladi Ithafa Umgwaqo Indlela Nagar Marg
Colony Chowk Gali Bazar Bazaar Layout Enclave Vihar Puram
"""
STREET_TYPES = frozenset(w.casefold() for w in _STREET_TYPE_WORDS.split())
# Longest first, so that "Streets" is not cut to "Street" and a "Parks" to "Park" (regex alternation is ordered).
_STREET_SUFFIX = "(?:" + "|".join(sorted(_STREET_TYPE_WORDS.split(), key=len, reverse=True)) + ")"
_STREET_SUFFIX_LOWER = _STREET_SUFFIX.lower()
_CAPWORD = r"[A-ZÀ-ÖØ-ÞĀ-ſȘȚ][\w'’\-]*"
# A capital of any Latin script ("Świerczewskiego", "Ełk", "Şükürlü"; Latin Extended-A holds both cases).
_UP = "A-ZÀ-ÖØ-ÞĀ-ſȘȚ"
_UNIT = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Fl\.?|Floor|Room|Rm\.?|#)\s*[\w\-]+)?"
_EU_STREET_WORD = (
    r"(?:stra(?:ss|ß)e|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|straat|laan|plein|gracht|kade|"
    r"singel|dijk|steeg|hof|boulevard|markt)"
)
_EU_STREET_PREFIX = (
    r"(?:[Rr]ue|[Aa]venue|av\.|[Bb]oulevard|bd|[Pp]lace|[Cc]hemin|[Aa]llée|[Ii]mpasse|[Qq]uai|[Rr]oute|cours|square|"
    r"Calle|C/|Avenida|Avda\.?|Plaza|Paseo|Camino|Carrer|Ronda|Cuesta|Vía|Via|Viale|Piazza|Piazzale|Corso|"
    r"Largo|Vicolo|Contrada|Borgo|Strada|Rotonda|Stretto|Canale|Incrocio|Callejón|Glorieta|Pasaje|Rambla|"
    r"Travesía|Urbanización|Rua|Travessa|Praça|Alameda|ul\.|ulica|aleja|al\.|Jl\.|Jln\.|Jalan|Gg\.|Gang|Lorong|"
    r"[Mm]ontée|[Cc]ôte|[Rr]ang|Diagonal|Transversal|pl\.|Carrera|Calzada|Prolongación|Circunvalación|Calea|Drumul|"
    r"Aleea|Splaiul|Intrarea|Bulevardul|Soseaua|Șoseaua|R\.)"
)
_NUMBER = r"\d{1,5}(?:[\-/]\d{1,4})?[A-Za-z]?"
# "no. 5", "Nr. 12", "N° 786", "nº 4": the word before a house number.
_NUMBER_WORD = r"(?i:no|nr|n[°º]|n\.º)\.?"
_PARTICLE = r"(?:de|del|de la|des|du|di|della|dos|da|do|das|la|le|les|los|las|y|e|van|von|der|den)"
# One to four capitalised words, with name particles between them: "de la Paix", "Desiderio Valbuena".
_EU_STREET_NAME = rf"(?:{_PARTICLE}\s+)*[{_UP}][\w'’\-]*(?:\s+(?:{_PARTICLE}\s+)*[{_UP}][\w'’\-]*){{0,3}}"


# Street words of many languages, as a word or a word's ending: "Nørregade", "Ekvägen", "Pikk tee", "utca".
_STREET_WORDS = """
vej gade gaden allé alle stræde plads vænget gata gatan vägen väg gränd torget veien vei gata tee tänav
utca út tér körút ulica ul aleja plac cesta ulice náměstí námestie trieda naselje katu kuja tie polku
straße strasse str gasse weg platz allee ring damm laan straat pad plein dreef gracht kade singel dijk
rue chemin allée impasse quai via viale vicolo piazza corso calle avenida camino paseo rua travessa
drumul strada stradă bulevardul aleea jalan gang jl lorong soi street road avenue lane drive
küçəsi küç prospekti prospekt pr döngəsi şossesi bulvarı meydanı sokak sokağı sk cadde caddesi cd mahallesi
isitaladi ithafa umgwaqo indlela umgaqo rylaan singel steeg
"""
_STREET_ENDINGS = tuple(_STREET_WORDS.split())
# A name, then a house number: "Nørregade 12", "Pikk tee 5", "Békésmelléki utca 202.", "Gang Laswi No. 706";
# never a dose or a measure ("Sertraline 50 mg", "Ward 5" is an everyday word).
# Tried at every word (a lookahead: a failed longer candidate, "goes to Björkvägen 23", must not hide the
# shorter one inside it); overlapping finds merge later.
_STREET_THEN_NUMBER = (
    rf"[^\W\d_]{{3,}}(?:-[^\W\d_]+)*(?:[ \t][^\W\d_]{{2,}}){{0,2}},?[ \t]+(?:{_NUMBER_WORD}[ \t]*)?"
    r"\d{1,4}[A-Za-z]?(?:/\d{1,4})?)\b\.?(?![/:.,\-]\d)"
    r"(?![ \t]*(?:mg|mcg|µg|g|ml|mL|units?|iu|IU|%|mmHg|bpm|kg|lbs?|cm|mm|years?|yrs?|days?|weeks?|months?|"
    r"hours?|hrs?|min|minutes|times|x|am|pm|AM|PM|tablets?|pills?|doses?|puffs?|drops?)\b))"
)
_NAME_THEN_NUMBER = re.compile(rf"\b(?=(?P<v>{_STREET_THEN_NUMBER}")
# A lower-case street of any locale after a place word: "moved to tveitkroken 776", "im at nørregade 12",
# "address: kaivokatu 3". Its first word is no word of English at all ("ozempic 1" after "on" is a dose).
_LOWER_STREET_AFTER_CUE = re.compile(
    rf"(?i:\b(?:at|to|in|from|address(?:\s+is)?|adres|adresse|dirección|indirizzo|endereço)[ \t]*:?[ \t]+)"
    rf"(?=(?P<v>{_STREET_THEN_NUMBER}"
)
# Zipf below this: a word wordfreq has (almost) never seen in English ("tveitkroken" 0, "nørregade" 0).
UNKNOWN_ZIPF = 1.0


def _lower_street_after_cue(value: str) -> bool:
    first = re.match(r"[^\W\d_]+", value)
    word = first.group() if first else ""
    return len(word) >= 5 and zipf(word) < UNKNOWN_ZIPF and not is_clinical(word) and _street_like(value, lower=True)


def _street_word(word: str) -> bool:
    low = word.casefold()
    return low in _STREET_ENDINGS or (len(low) > 2 and low.endswith(_STREET_ENDINGS))


def _street_like(value: str, *, lower: bool = False) -> bool:
    """A street's name before its number: a street word, or (capitalised, or after a place word when `lower`)
    a first word that is no everyday English."""
    # (a letter glued to the number is part of it: "6a/9")
    words = [w for w in re.findall(r"(?<!\d)[^\W\d_]+", value) if w.casefold() not in ("no", "nr", "n")]
    if any(w[0].islower() and is_common(w) and not _street_word(w) and w not in _STREET_PARTICLES for w in words):
        return False  # "Okonkwo on 3": an everyday lower-case word is prose, not a street ("pikk tee 5")
    if any(_street_word(w) for w in words):
        return True
    return bool(words) and (lower or words[0][0].isupper()) and is_rare(words[0])


# "my postcode is 4021", "ZIP: 1015 BS", "postal code H-3914": a postcode after its word, any country's form.
_POSTCODE_CUE = re.compile(
    r"(?i:\b(?:post(?:al)?[ \t]*code|postcode|zip(?:[ \t]*code)?|PLZ|CEP|CAP|code[ \t]+postal|c[óo]digo[ \t]+postal|"
    # India's PIN code (a card's PIN after the same words is a secret too), Germany's and the Nordics' words.
    r"pin[ \t]*code|postleitzahl|post(?:nummer|nr\.?)))"
    r"[ \t]*(?:is|:|-|#)?[ \t]*(?P<v>(?=[A-Z\- ]{0,4}\d)[A-Z0-9]{1,4}(?:[ \-]?[A-Z0-9]{2,4}){0,2})(?![\w\-])"
)
# A postcode after an address's comma, before a town: "..., 114 28 Stockholm", "..., H-3914 Felsőmellékháza".
_POSTCODE_BEFORE_TOWN = re.compile(
    rf"(?:(?<=, )|(?<=^)|(?<=\n))(?:[A-Z]{{1,2}}-)?(?:\d{{3,6}}|\d{{2}}(?=-))(?:[ \-]\d{{2,3}})?(?=[ \t]+[{_UP}][^\W\d_])|"
    r"\b[A-Z]\d[A-Z] ?\d[A-Z]\d\b|"
    # Between commas, before its town: "Via Roma, 24, 38061, Serravalle" (five digits: no year).
    rf"(?<=, )\d{{5,6}}(?=,[ \t]+[{_UP}][^\W\d_])"
)
# A postcode last on its line after a town and a comma: "..., Springs, 4794" (no year).
_POSTCODE_LAST = re.compile(
    rf"[{_UP}][\w'’\-]+, (?P<v>(?!(?:19|20)\d\d\b)\d{{4,6}})(?=[ \t]*(?:$|\n|[.;]))", re.MULTILINE
)
# A Dutch postcode before its town after a comma ("9592 FM, Grafhorst"), an Indian town and its PIN
# ("Rewa-355417").
_POSTCODE_COMMA_TOWN = re.compile(rf"\b\d{{4}} ?[A-Z]{{2}}(?=,[ \t]+[{_UP}][^\W\d_])|\b[{_UP}][a-z]+-\d{{6}}\b")
# A town, perhaps a state's or province's code, then the postcode, after an address's comma: ", Bandung 40117",
# ", Parramatta NSW 2150", ", Gregorytown, MB R3C 4T3", ", Lac- Marcelle, QC H3A 1G1", ", Ashford TN23 1AB".
_TOWN_THEN_POSTCODE = re.compile(
    rf"(?:(?<=, )|(?<=\n)|^)(?P<v>[{_UP}][^\W\d_]+(?:(?:[ \t]|-[ \t]?)[{_UP}][^\W\d_]+){{0,2}}(?:,?[ \t]+[A-Z]{{2,3}})?"
    r",?[ \t]+(?:\d{4,6}|[A-Z]\d[A-Z] ?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}))"
    r"(?![\w\-]|[.,]\d)"
)


# A street numbered by its crossing, as Latin America writes it: "Calle 12 # 34-56", "Cr. 8A # 2U-3 Sur",
# "Carrera 7 No. 45-10", "Diagonal 8 n° 65-8"; and an Indian house number, "H.No. 560", "House No. 12-3/A".
_CROSSING_STREET = re.compile(
    r"\b(?i:calle|carrera|cra|cr|cl|kr|kra|diagonal|dg|transversal|tv|tr|avenida|av|ak|ac)\.?[ \t]+\d{1,3}(?:[ \t]?[A-Z])?"
    r"(?:[ \t]+(?i:bis|sur|este|norte|oeste))?[ \t]*(?:#|(?i:no|n[°º])\.?)[ \t]*\d{1,3}[A-Z]?(?:[ \t]*-[ \t]*\d{1,3}[A-Z]?)?"
    r"(?:[ \t]+(?i:sur|este|norte|oeste)\b)?"
)
# A flat, then a street with no house number, as British addresses write it: "Flat 85, Yvonne Row", "Studio 37,
# Ward Bridge".
_UNIT_THEN_STREET = re.compile(
    rf"\b(?:Flat|Studio|Apartment|Unit|Suite)[ \t]+\d{{1,4}}[A-Za-z]?,?[ \t]+(?:{_CAPWORD}[ \t]+){{1,3}}{_STREET_SUFFIX}\b"
)
# A street or district named before its word, as Azerbaijani, Turkish and Russian addresses write them:
# "Xızı ray.", "2-Cİ SÜLH küç.", "Atatürk Cad.", "Lenina ul." (the building and flat after it join by extent).
_NAME_THEN_STREET_WORD = re.compile(
    rf"\b(?:\d{{1,3}}-[^\W\d_]{{1,3}}[ \t]+)?(?:[{_UP}][^\W\d_]*\.?[ \t]+){{1,3}}"
    r"(?i:küç|küçəsi|pr|prosp|prospekti|ray|rayonu|döngəsi|şossesi|bulvarı|meydanı|sokak|sok|sk|cadde|caddesi|cad|"
    r"mah|mahallesi|ulitsa|prospekt|pereulok|per|shosse|bulvar)\.?(?![\w])"
)


def _named_street(value: str) -> bool:
    words = re.findall(r"(?<![\d\-])[^\W\d_]+", value)[:-1]
    return any(not is_common(w) and len(w) > 2 for w in words)


_HOUSE_NUMBER = re.compile(
    r"\b(?i:H\.?[ \t]?No|House[ \t]+No|Plot[ \t]+No|Door[ \t]+No|Flat[ \t]+No|Khasra[ \t]+No)\.?[ \t]*"
    r"\d{1,5}[A-Za-z]?(?:[\-/]\d{1,4}[A-Za-z]?)*(?:/[A-Z])?"
)


def _town_like(value: str) -> bool:
    """Not "Total 12345": some word of the town is not an everyday word ("New Ryanfort, NB C1X 2K2")."""
    words = re.findall(r"[^\W\d_]+", value)
    return any(not is_common(w) and not (w.isupper() and len(w) <= 3) for w in words)


# Military and post-office boxes: "PSC 1234, Box 5678", "Unit 9995 Box 9893", "APO AE 09876", "USNS Aston".
_MAIL_BOX = re.compile(
    r"\b(?:P\.?[ \t]?O\.?[ \t]*Box[ \t]+\d{1,6}|(?:PSC|CMR|Unit)[ \t]+\d{1,5},?[ \t]+Box[ \t]+\d{1,5}|"
    r"(?:APO|FPO|DPO)[ \t]+(?:AE|AA|AP)[ \t]+\d{5}|(?:USNS|USNV|USS|USCGC)[ \t]+[A-Z][a-z]+)",
    re.IGNORECASE,
)
# A lower-case street address: "12 elm street", "8395 maria freeway", "343 þórhallisson isle" ("4 rue de la paix"
# is left to the pattern below).
_LOWER_STREET = re.compile(rf"\b\d{{1,5}}[a-z]?[ \t]+(?:[a-zß-ÿ][\w'’\-]*[ \t]+){{1,3}}{_STREET_SUFFIX_LOWER}\b\.?")
# Street types that are seldom anything else in lower case after a number and a name.
_PLAIN_STREET_TYPE_WORDS = """
street st avenue ave road rd lane ln drive dr boulevard blvd court ct way place pl terrace crescent close
square highway hwy parkway pkwy grove parade esplanade mews circle trail freeway motorway expressway
"""
_PLAIN_STREET_TYPES = frozenset(_PLAIN_STREET_TYPE_WORDS.split())


def _lower_street_named(value: str) -> bool:
    """ "12 elm street" is an address, "2 tablets at the park" is not: a plain street type, or a name that is not
    made of everyday words."""
    words = re.findall(r"[^\W\d_]+", value)
    if words[-1].casefold() in _PLAIN_STREET_TYPES:
        return True
    name = words[:-1]
    if any(w in STOP_WORDS for w in name):  # "3 miles along the river": prose, no street's name has "the"
        return False
    return any(not is_common(w) and not is_clinical(w) for w in name)


# Lower-case street forms that start with their street word, in chat: "via roma 12", "rue de la paix 4",
# "ul. kwiatowa 15/3", "jl. merdeka no. 45", and "4 rue de la paix".
_LOWER_PREFIX = (
    r"(?:rue|avenue|chemin|allée|impasse|quai|calle|avenida|camino|paseo|carrer|via|viale|piazza|corso|"
    r"largo|vicolo|strada|rua|travessa|praça|ul\.|ulica|aleja|al\.|jl\.|jln\.|jalan|gang|gg\.|str\.|"
    r"bulevardul|aleea|calea|trg|ulice|contrada|borgo|c/|pl\.|plac|rambla|ronda|alameda|praceta|largo|boulevard|bd|"
    r"r\.|montée|cesta|rotonda|stretto|canale|piazzale|viale|vicolo|incrocio|borgo|rodovia|travessa|estrada)"
)
_LOWER_PREFIX_STREET = re.compile(
    rf"(?<![\w.]){_LOWER_PREFIX}[ \t]+(?:[a-zß-ÿ][^\W\d_]*,?[ \t]+){{1,4}}"
    r"(?:no\.?[ \t]*|nr\.?[ \t]*)?\d{1,5}[a-z]?(?:/\d{1,4})?(?![\w/])"
)
# A street's name ends before the words that go on the sentence: "... louise rivière last month".
# (a unit word starts the unit, which joins by extent: "... amélie apt. 185").
_PROSE_AFTER = (
    r"(?!(?:last|next|this|that|the|and|or|in|on|at|to|for|with|from|since|ago|now|then|today|yesterday|tomorrow|"
    r"apt|apartment|suite|unit|flat|floor|piso|appartamento)\b)"
)
_LOWER_NUMBER_STREET = re.compile(
    rf"(?<![\w.])\d{{1,5}}[a-z]?,?[ \t]+{_LOWER_PREFIX}(?:[ \t]+{_PROSE_AFTER}[a-zß-ÿ][^\W\d_]*){{1,4}}(?![\w])"
)


def _lower_street_ok(value: str) -> bool:
    """No everyday English word but particles inside: "via email 2" is prose, "via roma 12" a street."""
    words = re.findall(r"[^\W\d_]+", value)[1:]  # the street word itself may be English ("via")
    return not any(is_common(w) and w not in _STREET_PARTICLES for w in words)


# Words inside a street's name or before its number that are English words too.
_STREET_PARTICLES = frozenset(
    [
        "de",
        "la",
        "le",
        "del",
        "da",
        "di",
        "do",
        "dos",
        "das",
        "no",
        "nr",
        "na",
        "u",
        "v",
        "pod",
        "nad",
        "ob",
        "pri",
        "za",
    ]
)


# A lower-case town after its postcode: "00184 roma", "114 28 stockholm", "31-052 krakow" (the town must be
# no word of English and the number no year, so "2023 onwards" or "10000 units" are not places).
_LOWER_POSTCODE_TOWN = re.compile(
    r"(?<![\w.,\-])(?<!\d[ \t])(?!(?:19|20)\d\d\b)(?P<v>(?:\d{3}[ \t]\d{2}|\d{2}-\d{3}|\d{4}-\d{3}|\d{4,6})[ \t]+"
    r"[a-zß-ÿ][^\W\d_]{2,})(?![\w\-])"
)


# A lower-case town is less frequent in English than everyday words ("lost" 5.3, "units" 4.6); towns that
# are English words too ("bath", "reading") are left to their capitalised forms: "stockholm" 3.7, "wien" 2.5.
LOWER_TOWN_ZIPF = 4.0


def _lower_town_ok(value: str) -> bool:
    town = value.split()[-1]
    return not is_common(town) and not is_clinical(town) and zipf(town) < LOWER_TOWN_ZIPF


# The town (and state or country) after a street: "123 Maple Street, Springfield", "..., Anytown, USA".
_TOWN_AFTER_STREET = re.compile(
    rf"(?<=\d)[ \t][^\n,]{{2,60}}?\b{_STREET_SUFFIX}\.?,[ \t]+(?P<v>[A-Z][\w'’\-]+(?:[ \t][A-Z][\w'’\-]+)?"
    r"(?:,[ \t]+[A-Z]{2,3}\b)?)"
)


# Suffixes that name nothing but a street (not "Park", "Way" or "Court", which are other things too).
_STREET_ONLY = (
    r"(?:(?:Street|Avenue|Road|Boulevard|Lane|Drive|Terrace|Parkway|Highway|Crescent)\b|"
    r"(?:Ave|Blvd|Rd|Hwy|Pkwy|St(?![ \t]*\.?[ \t]*[A-Z]))\b\.?)"
)
_STREET_NO_NUMBER = re.compile(
    rf"(?<![\w.])(?:\d{{1,3}}(?:st|nd|rd|th)|(?!(?:The|A|An|This|That|Our|Your|Each|Every)\b)[A-Z][\w'’\-]*"
    rf"(?:[ \t]+[A-Z][\w'’\-]*){{0,2}})[ \t]+{_STREET_ONLY}"
)


def address_recognizers() -> list[EntityRecognizer]:
    """Street addresses and postcodes."""
    return [
        RegexRecognizer(
            "LOCATION",
            [
                (
                    re.compile(
                        rf"\b\d{{1,6}}(?:/\d{{1,4}})?[A-Za-z]?,?(?:\s+[NSEW]\.?)?(?:\s+{_CAPWORD}){{1,4}}\s+{_STREET_SUFFIX}\b\.?"
                        rf"{_UNIT}"
                    ),
                    0.85,
                ),
                # A bounded word (compound street names are shorter): unbounded, a long hyphenated run is quadratic.
                (re.compile(rf"\b[A-ZÄÖÜ][\w'’\-]{{0,48}}?(?i:{_EU_STREET_WORD})\s+{_NUMBER}\b"), 0.85),
                (re.compile(rf"\b{_NUMBER},?\s+{_EU_STREET_PREFIX}\s+{_EU_STREET_NAME}{_UNIT}"), 0.8),
                (
                    re.compile(
                        rf"\b{_EU_STREET_PREFIX}\s+{_EU_STREET_NAME},?\s+(?:{_NUMBER_WORD}\s*)?{_NUMBER}\b{_UNIT}"
                    ),
                    0.8,
                ),
                # "ZIP 02139", "..., MA 02139-1234" (the state stays), UK and Dutch postcodes.
                (re.compile(r"(?i:\bzip(?:\s*code)?)\s*:?\s*(?P<v>\d{5}(?:-\d{4})?)\b"), 0.9),
                (
                    re.compile(r"\b(?:" + "|".join(sorted(US_STATE_CODES)) + r"),?\s+(?P<v>\d{5}(?:-\d{4})?)\b"),
                    0.9,
                ),
                # A street named without a house number: "on 5th Avenue", "the café on Maple Street".
                (_STREET_NO_NUMBER, 0.7),
                (re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"), 0.8),
                # European postcodes before a town: ", 49522 Neuss", "3245 KK Piershil".
                (
                    re.compile(r"(?<=, )\d{5}(?=[ \t]+[A-Z][^\W\d_])|\b\d{4} ?[A-Z]{2}(?=[ \t]+[A-Z][^\W\d_])"),
                    0.8,
                ),
            ],
        ),
        RegexRecognizer(
            "LOCATION",
            [
                (_POSTCODE_CUE, 0.85),
                (_POSTCODE_COMMA_TOWN, 0.75),
                (_POSTCODE_LAST, 0.7),
                (_POSTCODE_BEFORE_TOWN, 0.7),
                (_MAIL_BOX, 0.85),
                (_CROSSING_STREET, 0.8),
                (_UNIT_THEN_STREET, 0.8),
                (_HOUSE_NUMBER, 0.8),
                (_TOWN_AFTER_STREET, 0.8),
            ],
            name="SiloPostcodeBox",
        ),
        RegexRecognizer("LOCATION", [(_LOWER_STREET, 0.8)], validate=_lower_street_named, name="SiloLowerStreetType"),
        RegexRecognizer("LOCATION", [(_NAME_THEN_NUMBER, 0.7)], validate=_street_like, name="SiloStreetAnyLocale"),
        RegexRecognizer(
            "LOCATION", [(_LOWER_STREET_AFTER_CUE, 0.7)], validate=_lower_street_after_cue, name="SiloLowerStreetCue"
        ),
        RegexRecognizer("LOCATION", [(_TOWN_THEN_POSTCODE, 0.7)], validate=_town_like, name="SiloTownPostcode"),
        RegexRecognizer(
            "LOCATION", [(_NAME_THEN_STREET_WORD, 0.7)], validate=_named_street, name="SiloStreetWordAfter"
        ),
        RegexRecognizer(
            "LOCATION",
            [(_LOWER_PREFIX_STREET, 0.7), (_LOWER_NUMBER_STREET, 0.7)],
            validate=_lower_street_ok,
            name="SiloLowerStreet",
        ),
        RegexRecognizer("LOCATION", [(_LOWER_POSTCODE_TOWN, 0.6)], validate=_lower_town_ok, name="SiloLowerTown"),
    ]
