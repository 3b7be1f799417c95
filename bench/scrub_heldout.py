"""A held-out template family for `bench/scrub_eval.py`: prose the recognizers were never tuned on.

Written before the recognizer changes of issue 17 and never used while tuning them (only its totals were
read). It plants the failure classes issue 17 names, in the shapes others write them:
- names with no cue word: at a sentence start, after a comma, in lists, from Faker locales outside the
  name lists (`client.recognizers.NAME_LIST_LOCALES`) and outside `silo.synthetic.NAME_LOCALES`;
- street addresses in the formats of 20 locales (`Faker.street_address`), military and PO-box forms,
  lower-case addresses in chat;
- phone numbers in the locales' national formats, with and without a cue;
- postal codes after a cue or at the end of an address;
- employers and hospitals in clinical prose (labelled ORGANIZATION).

Deterministic for a seed; labels are exact character offsets, as in `silo.synthetic`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from faker import Faker

from silo.synthetic import LabelledRecord, RecordBuilder, Span, reproducible_faker

# Address and phone formats: locales none of the project's templates draw addresses or phones from.
ADDRESS_LOCALES = (
    "da_DK",
    "fi_FI",
    "sv_SE",
    "cs_CZ",
    "hu_HU",
    "pl_PL",
    "pt_PT",
    "no_NO",
    "de_AT",
    "nl_BE",
    "it_IT",
    "es_ES",
    "ro_RO",
    "hr_HR",
    "sk_SK",
    "sl_SI",
    "en_AU",
    "en_NZ",
    "en_CA",
    "id_ID",
)
# Name locales: the project's held-out ones plus some no list has seen.
NAME_LOCALES = (
    "da_DK",
    "fi_FI",
    "sv_SE",
    "cs_CZ",
    "hu_HU",
    "no_NO",
    "sk_SK",
    "sl_SI",
    "lv_LV",
    "et_EE",
    "hr_HR",
    "ro_RO",
    "lt_LT",
    "is_IS",
    "ga_IE",
    "yo_NG",
    "sw",
    "zu_ZA",
    "vi_VN",
    "id_ID",
    "en_US",
    "de_DE",
)
_ORG_WORDS = ("Memorial Hospital", "General Hospital", "Clinic", "Medical Center", "Health Centre", "Infirmary")
_CLINICAL = (
    "worsening dyspnoea",
    "a fall at home",
    "poorly controlled diabetes",
    "recurrent syncope",
    "post-operative wound care",
    "a suspected stroke",
    "an exacerbation of COPD",
)


class _Rec(RecordBuilder):
    """A held-out record under construction, with its own random source and name locales."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def faker(self, locales: tuple[str, ...]) -> Faker:
        f = reproducible_faker(self.rng.choice(locales))
        f.seed_instance(self.rng.getrandbits(32))
        return f

    def name(self) -> tuple[str, str]:
        f = self.faker(NAME_LOCALES)
        return f.first_name(), f.last_name()

    def record(self, lower: bool = False) -> LabelledRecord:
        """The record; `lower`: all in lower case (chat), each span's value taken from the lowered text."""
        built = self.build()
        if not lower:
            return built
        text = built.text.lower()
        return LabelledRecord(
            text, tuple(Span(s.entity_type, text[s.start : s.end], s.start, s.end) for s in built.spans)
        )


def _letter(r: _Rec) -> LabelledRecord:
    l1, (f2, l2) = r.name()[1], r.name()
    place = r.faker(ADDRESS_LOCALES)
    r.pii("PERSON", l1).add(" had moved to ").pii("LOCATION", place.city()).add(" before the admission. ")
    r.pii("PERSON", f"{f2} {l2}").add(", from ").pii("ORGANIZATION", r.faker(("en_US", "de_DE", "fr_FR")).company())
    r.add(f", referred {'her' if r.rng.random() < 0.5 else 'him'} for {r.rng.choice(_CLINICAL)}. ")
    r.pii("PERSON", l1).add(" lives alone at ").pii("LOCATION", place.street_address()).add(".")
    return r.record()


def _minutes(r: _Rec) -> LabelledRecord:
    names = [r.name() for _ in range(3)]
    r.pii("PERSON", " ".join(names[0])).add(", from the ethics board, chaired the meeting. Present were ")
    r.pii("PERSON", " ".join(names[1])).add(" and ").pii("PERSON", " ".join(names[2])).add(". ")
    r.pii("PERSON", names[1][1]).add(" will circulate the notes by ").pii("DATE_TIME", f"{r.rng.randrange(1, 28)} May")
    r.add(".")
    return r.record()


def _new_address(r: _Rec) -> LabelledRecord:
    f = r.faker(ADDRESS_LOCALES)
    first, last = r.name()
    r.add("please update my address to ").pii("LOCATION", f.street_address()).add(", ")
    r.pii("LOCATION", f.postcode()).add(" ").pii("LOCATION", f.city()).add(". you can reach me on ")
    r.pii("PHONE_NUMBER", f.phone_number()).add(" in the evenings. thanks, ").pii("PERSON", f"{first} {last}")
    return r.record(lower=r.rng.random() < 0.4)


def _military(r: _Rec) -> LabelledRecord:
    f = r.faker(("en_US",))
    first, last = r.name()
    r.add("My son ").pii("PERSON", first).add(" is deployed; send the card to ")
    r.pii("LOCATION", r.rng.choice((f.military_apo, f.military_dpo, f.military_ship))()).add(", ")
    r.pii("LOCATION", f"APO AE {r.rng.randrange(9000, 10000):05d}").add(". Signed, ").pii("PERSON", f"{first} {last}")
    return r.record()


def _postcode(r: _Rec) -> LabelledRecord:
    f = r.faker(ADDRESS_LOCALES)
    cue = r.rng.choice(("my postcode is", "ZIP:", "post code", "postal code"))
    r.add(f"Checking coverage for home care, {cue} ").pii("LOCATION", f.postcode()).add(". Call ")
    r.pii("PHONE_NUMBER", f.phone_number()).add(" if a nurse can come.")
    return r.record()


def _transfer(r: _Rec) -> LabelledRecord:
    first, last = r.name()
    hosp = r.faker(ADDRESS_LOCALES)
    r.pii("PERSON", f"{first} {last}").add(" was transferred from ").pii(
        "ORGANIZATION", f"{hosp.last_name()} {r.rng.choice(_ORG_WORDS)}"
    )
    r.add(" to ").pii("ORGANIZATION", f"{hosp.city()} {r.rng.choice(_ORG_WORDS)}").add(" on ")
    r.pii("DATE_TIME", f"{r.rng.randrange(1, 13)}/{r.rng.randrange(1, 29)}/{r.rng.randrange(2019, 2026)}")
    r.add(f" with {r.rng.choice(_CLINICAL)}. Daughter ").pii("PERSON", r.name()[0]).add(" was informed.")
    return r.record()


def _chat(r: _Rec) -> LabelledRecord:
    f = r.faker(ADDRESS_LOCALES)
    first, _ = r.name()
    r.add("hey its ").pii("PERSON", first).add(", can we meet at ").pii("LOCATION", f.street_address())
    r.add(" tmrw? my number changed, it's ").pii("PHONE_NUMBER", f.phone_number()).add(" now")
    return r.record(lower=True)


def _colleague(r: _Rec) -> LabelledRecord:
    (f1, l1), (f2, l2) = r.name(), r.name()
    r.add("Spoke with the employer today. ").pii("PERSON", f"{f1} {l1}").add(" works night shifts at ")
    r.pii("ORGANIZATION", r.faker(("en_US", "en_GB")).company()).add("; ").pii("PERSON", f"{f2} {l2}")
    r.add(", a colleague, drives him home. Email: ").pii("EMAIL_ADDRESS", r.faker(("en_US",)).email()).add(".")
    return r.record()


TEMPLATES: tuple[Callable[[_Rec], LabelledRecord], ...] = (
    _letter,
    _minutes,
    _new_address,
    _military,
    _postcode,
    _transfer,
    _chat,
    _colleague,
)


def make_heldout_records(n: int, *, seed: int) -> list[LabelledRecord]:
    """`n` records of the held-out family, deterministic for `seed`."""
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES)(_Rec(random.Random(rng.getrandbits(64)))) for _ in range(n)]
