"""Vocabulary the recognizers judge words by: everyday words, the domain's words, and names.

- `is_common`: an everyday English word (spaCy's stop words, Faker's en_US word list, the clinical, banking and
  letter vocabulary below), never name evidence by itself;
- `is_rare`: a word that is not a common word of English by a maintained frequency vocabulary (`wordfreq`):
  what a capitalised word that is not a known word most likely is, a name;
- `name_tokens`: first and last names from Faker's person providers for `NAME_LIST_LOCALES` (maintained,
  per-locale, romanised for ja_JP / zh_CN); only these locales are used, so an evaluation can hold others out.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache, lru_cache

# Faker locales whose name lists the recognizer uses. The rest of silo.synthetic.NAME_LOCALES is held out.
NAME_LIST_LOCALES: tuple[str, ...] = (
    "en_US",
    "en_GB",
    "en_IE",
    "es_ES",
    "es_MX",
    "de_DE",
    "fr_FR",
    "it_IT",
    "en_IN",
    "nl_NL",
    "pl_PL",
    "pt_BR",
    "tr_TR",
    "en_PK",
    "en_NG",
    "ja_JP",
    "zh_CN",
)
_NAME_ATTRS = (
    "first_names",
    "first_names_male",
    "first_names_female",
    "last_names",
    "first_romanized_names",
    "last_romanized_names",
    "last_names_male",
    "last_names_female",
    "male_last_names",
    "female_last_names",
    "unisex_last_names",
)

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
mental behavioral behavioural public occupational primary urgent emergency women's pediatric paediatric
cardiac cancer eye dental sports rehab rehabilitation surgical surgery outpatient inpatient department dept
sir madam hospital's luke's children's mary's anne's also old one was moved new hello dispute overdraft
i'm i've i'll i'd mastercard maestro amex paypal venmo zelle contactless
"""


@cache
def common_words() -> frozenset[str]:
    """Lower-cased everyday English words: never name evidence by themselves."""
    from spacy.lang.en.stop_words import STOP_WORDS

    lorem = importlib.import_module("faker.providers.lorem.en_US").Provider.word_list
    return frozenset(w.casefold() for w in (*STOP_WORDS, *lorem, *_DOMAIN_WORDS.split()))


def is_common(token: str) -> bool:
    return _is_common(token.casefold())


@lru_cache(maxsize=1 << 16)  # asked of every capitalised word of every text, and the same words recur
def _is_common(low: str) -> bool:
    words = common_words()
    if low in words:
        return True
    # Plain inflections of a common word are common too ("works", "reported", "checking"), when used about as
    # often as it: "Harding" is no inflection of "hard", nor "Hering" of "her", "Reed" of "re".
    return any(
        low.endswith(sfx)
        and len(low) - len(sfx) >= 3
        and low[: -len(sfx)] in words
        and zipf(low) > zipf(low[: -len(sfx)]) - INFLECTION_ZIPF_GAP
        for sfx in ("s", "es", "ed", "d", "ing", "ly")
    )


# An inflection is used less than its stem, but not a hundred times less: "mornings" 3.7 against "morning" 5.3,
# "nights" 4.5 against 5.6; "harding" 3.5 against "hard" 5.5 is another word (a name).
INFLECTION_ZIPF_GAP = 2.0


def _faker_names(attrs: tuple[str, ...]) -> Iterator[str]:
    """Every name Faker's person providers list under `attrs` for NAME_LIST_LOCALES."""
    for locale in NAME_LIST_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in attrs:
            yield from getattr(provider, attr, ())


@cache
def name_tokens() -> frozenset[str]:
    """Lower-cased first and last name tokens from Faker's person providers for NAME_LIST_LOCALES."""
    tokens = {t.casefold() for name in _faker_names(_NAME_ATTRS) for t in re.split(r"[\s\-]+", name) if len(t) > 1}
    return frozenset(t for t in tokens if not is_common(t))


@cache
def given_names() -> frozenset[str]:
    """Lower-cased given names of NAME_LIST_LOCALES, everyday words among them kept ("will", "grace", "bill"):
    what a common word directly before a surname may be."""
    attrs = ("first_names", "first_names_male", "first_names_female")
    return frozenset(n.casefold() for n in _faker_names(attrs) if " " not in n)


# A word used less often than this in English (Zipf scale: log10 of uses per billion words; 3 = once per
# million) is not an everyday word: "Halvorsen" 2.0, "Okafor" 2.6, but "river" 4.6, "hospital" 5.0.
RARE_ZIPF = 3.0
# Clinical word endings (inflammations, tumours, procedures, drug stems): rare words that are not names.
_CLINICAL_ENDING_WORDS = """
itis osis emia aemia oma pathy ectomy otomy ostomy plasty scopy graphy gram algia plegia trophy penia
cytosis uria pril olol sartan statin azole mycin micin cillin cycline floxacin prazole tidine dipine xaban
parin mab tinib ciclib vir formin gliptin glutide gliflozin lukast terol sone olone zepam zolam oxetine
triptan setron semide thiazide profen codone morphone barbital caine tropin kinase ology iatry iatrics
"""
_CLINICAL_ENDINGS = tuple(_CLINICAL_ENDING_WORDS.split())


@cache
def zipf(word: str) -> float:
    """English frequency of `word` (case-folded) on wordfreq's Zipf scale; 0 for a word it has never seen."""
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, "en"))


_CONTINENTS = ("Africa", "Antarctica", "Asia", "Europe", "North America", "South America", "Oceania", "Australia")
# Everyday names of countries that Faker's list writes otherwise ("United States of America", "Russian Federation"),
# comma-separated.
_COUNTRY_NAMES_TEXT = """
America, United States, USA, US, UK, Britain, Great Britain, England, Scotland, Wales, Northern Ireland
Russia, South Korea, North Korea, Korea, Vietnam, Iran, Syria, Laos, Czechia, Czech Republic, Holland
Netherlands, UAE, Ivory Coast, Macedonia, Moldova, Bolivia, Venezuela, Tanzania, Taiwan, Palestine, Kosovo
"""
_COUNTRY_NAMES = tuple(n.strip() for line in _COUNTRY_NAMES_TEXT.strip().splitlines() for n in line.split(","))


@cache
def countries() -> frozenset[str]:
    """Lower-cased names of countries (Faker's en_US list) and continents: no identifier of a person by HIPAA's
    Safe Harbor rule, which removes geographic units smaller than a state."""
    provider = importlib.import_module("faker.providers.address.en_US").Provider
    return frozenset(c.casefold() for c in (*provider.countries, *_CONTINENTS, *_COUNTRY_NAMES))


def is_clinical(word: str) -> bool:
    low = word.casefold()
    return len(low) > 5 and low.endswith(_CLINICAL_ENDINGS)


def is_rare(word: str) -> bool:
    """Not a common English word, nor clinical vocabulary: what a capitalised unknown word most likely is, a name."""
    return len(word) > 1 and not is_common(word) and not is_clinical(word) and zipf(word) < RARE_ZIPF
