"""Synthetic site records with planted, labelled identifiers.

Two kinds of site text: clinical notes (hospital sites) and customer messages (bank sites). Every planted
identifier is recorded as a `Span` with its exact character offsets, so the same records serve as demo
training data and as the labelled set for `bench/scrub_eval.py`.

Deterministic for a seed: all randomness comes from one `random.Random(seed)`; Faker instances are
re-seeded from it for every record. Names come from many Faker locales (Latin-script output only); pass
`name_locales` to draw from a subset, e.g. locales the scrubber's name list was not built from.

One concept, the generator: its length is its data tables (conditions, medicines, places, one item a
line as the formatter lays them out) and one small function per record template.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from typing import Self

from faker import Faker

from client.recognizers.vocabulary import NAME_LIST_LOCALES
from common.errors import ConfigError

# One fixed vocabulary of entity types, shared with the scrubber and the evaluation harness.
ENTITY_TYPES: tuple[str, ...] = (
    "PERSON",
    "DATE_TIME",
    "AGE",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "US_SSN",
    "MEDICAL_RECORD_NUMBER",
    "HEALTH_PLAN_NUMBER",
    "ACCOUNT_NUMBER",
    "ROUTING_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "SWIFT_CODE",
    "LICENSE_NUMBER",
    "VEHICLE_ID",
    "DEVICE_ID",
    "URL",
    "IP_ADDRESS",
    "LOCATION",
)

# Latin-script name sources. ja_JP / zh_CN / zh_TW contribute their romanised name lists.
NAME_LOCALES: tuple[str, ...] = (
    # the recognizer's own name-list locales first; the rest are held out from it
    *NAME_LIST_LOCALES,
    "zh_TW",
    "yo_NG",
    "ig_NG",
    "ha_NG",
    "sw",
    "zu_ZA",
    "fi_FI",
    "hu_HU",
    "cs_CZ",
    "ga_IE",
    "vi_VN",
    "id_ID",
    "da_DK",
    "sv_SE",
    "ro_RO",
    "hr_HR",
    "lt_LT",
    "et_EE",
    "az_AZ",
    "uz_UZ",
    "tw_GH",
    "en_KE",
    "is_IS",
)
_ROMANISED_LOCALES = frozenset({"ja_JP", "zh_CN", "zh_TW"})

# Real US cities: the generator's own list, deliberately not shared with the scrubber (no memorising).
_US_PLACES: tuple[tuple[str, str], ...] = (
    ("Boston", "MA"),
    ("Worcester", "MA"),
    ("Springfield", "IL"),
    ("Peoria", "IL"),
    ("Chicago", "IL"),
    ("Madison", "WI"),
    ("Duluth", "MN"),
    ("Rochester", "MN"),
    ("Des Moines", "IA"),
    ("Omaha", "NE"),
    ("Wichita", "KS"),
    ("Tulsa", "OK"),
    ("Little Rock", "AR"),
    ("Baton Rouge", "LA"),
    ("Jackson", "MS"),
    ("Birmingham", "AL"),
    ("Savannah", "GA"),
    ("Charleston", "SC"),
    ("Durham", "NC"),
    ("Richmond", "VA"),
    ("Baltimore", "MD"),
    ("Dover", "DE"),
    ("Trenton", "NJ"),
    ("Albany", "NY"),
    ("Buffalo", "NY"),
    ("Hartford", "CT"),
    ("Providence", "RI"),
    ("Burlington", "VT"),
    ("Portland", "ME"),
    ("Concord", "NH"),
    ("Pittsburgh", "PA"),
    ("Scranton", "PA"),
    ("Columbus", "OH"),
    ("Toledo", "OH"),
    ("Ann Arbor", "MI"),
    ("Flint", "MI"),
    ("Fort Wayne", "IN"),
    ("Louisville", "KY"),
    ("Knoxville", "TN"),
    ("Memphis", "TN"),
    ("El Paso", "TX"),
    ("Lubbock", "TX"),
    ("San Antonio", "TX"),
    ("Santa Fe", "NM"),
    ("Tucson", "AZ"),
    ("Flagstaff", "AZ"),
    ("Boise", "ID"),
    ("Billings", "MT"),
    ("Fargo", "ND"),
    ("Sioux Falls", "SD"),
    ("Cheyenne", "WY"),
    ("Provo", "UT"),
    ("Reno", "NV"),
    ("Fresno", "CA"),
    ("Oakland", "CA"),
    ("Sacramento", "CA"),
    ("Eugene", "OR"),
    ("Spokane", "WA"),
    ("Tacoma", "WA"),
    ("Anchorage", "AK"),
    ("Honolulu", "HI"),
    ("Gainesville", "FL"),
    ("Tallahassee", "FL"),
    ("Orlando", "FL"),
    ("Aurora", "CO"),
)
# Real US area codes, so generated numbers are valid to a phone-number library.
_AREA_CODES = (
    "201",
    "212",
    "213",
    "303",
    "312",
    "314",
    "404",
    "415",
    "503",
    "512",
    "602",
    "608",
    "612",
    "617",
    "702",
    "713",
    "718",
    "773",
    "804",
    "816",
    "860",
    "901",
    "919",
    "952",
)

_CONDITIONS = (
    "type 2 diabetes mellitus",
    "essential hypertension",
    "community-acquired pneumonia",
    "atrial fibrillation",
    "congestive heart failure",
    "COPD exacerbation",
    "acute kidney injury",
    "urinary tract infection",
    "major depressive disorder",
    "migraine without aura",
    "asthma",
    "hypothyroidism",
    "cellulitis of the left lower leg",
    "chronic low back pain",
    "gout flare",
    "iron deficiency anaemia",
    "GERD",
    "osteoarthritis of the right knee",
    "sepsis of unclear source",
    "new-onset seizure",
    "acute pancreatitis",
    "deep vein thrombosis",
    "hyperlipidaemia",
)
_SYMPTOMS = (
    "shortness of breath",
    "chest pain radiating to the left arm",
    "fever and productive cough",
    "intermittent palpitations",
    "dysuria and frequency",
    "worsening fatigue",
    "bilateral leg swelling",
    "nausea and vomiting",
    "epigastric pain",
    "headache with photophobia",
    "dizziness on standing",
    "a painful, swollen joint",
    "polyuria and polydipsia",
    "confusion noted by family",
)
_MEDS = (
    "metformin 500 mg twice daily",
    "lisinopril 10 mg daily",
    "atorvastatin 40 mg at night",
    "apixaban 5 mg twice daily",
    "furosemide 40 mg daily",
    "albuterol inhaler as needed",
    "levothyroxine 75 mcg daily",
    "sertraline 50 mg daily",
    "amoxicillin 875 mg twice daily",
    "prednisone 40 mg for 5 days",
    "omeprazole 20 mg daily",
    "insulin glargine 18 units at bedtime",
    "ceftriaxone 1 g IV daily",
    "allopurinol 100 mg daily",
    "ferrous sulfate 325 mg daily",
)
_PLANS = (
    "continue current regimen and recheck labs in 2 weeks",
    "start antibiotics, follow up in 48 hours",
    "titrate dose, home BP log",
    "refer to cardiology; echo ordered",
    "admit for IV fluids and monitoring",
    "diet and exercise counselling, HbA1c in 3 months",
    "chest X-ray and CBC today",
    "physical therapy twice weekly",
    "discharge home with return precautions",
)
_HOSPITALS = (
    "Mercy General Hospital",
    "St. Luke's Medical Center",
    "Riverside Community Hospital",
    "Good Samaritan Hospital",
    "University Medical Center",
    "Sacred Heart Clinic",
    "Children's Hospital",
    "Memorial Regional Hospital",
    "Veterans Affairs Medical Center",
    "Lakeside Family Practice",
)
_DEVICES = ("pacemaker", "insulin pump", "CPAP machine", "cochlear implant", "glucose monitor", "ICD")
_BANK_TOPICS = (
    "I was charged twice for the same purchase",
    "my card was declined abroad",
    "I don't recognise a transaction from last week",
    "the transfer has not arrived yet",
    "I need to raise my daily limit",
    "please close my old savings account",
    "the mobile app keeps logging me out",
    "I want to dispute an overdraft fee",
)


@dataclass(frozen=True)
class Span:
    """One planted identifier: `text[start:end] == entity_value`."""

    entity_type: str
    entity_value: str
    start: int
    end: int


@dataclass(frozen=True)
class LabelledRecord:
    text: str
    spans: tuple[Span, ...]


def to_span_json(records: Sequence[LabelledRecord]) -> list[dict]:
    """Records in the span format read by `bench/scrub_eval.py --spans`."""
    return [
        {
            "full_text": r.text,
            "spans": [
                {
                    "entity_type": s.entity_type,
                    "entity_value": s.entity_value,
                    "start_position": s.start,
                    "end_position": s.end,
                }
                for s in r.spans
            ],
        }
        for r in records
    ]


def reproducible_faker(locale: str) -> Faker:
    """A Faker for `locale` whose seeded draws are the same in every process. Some locales list their towns
    from a set (it_IT: `getcities`), in an order that follows Python's hash seed; sorted, the same seed draws
    the same towns whatever the process's hash seed."""
    f = Faker(locale)
    for provider in f.providers:
        if isinstance(getattr(provider, "cities", None), list):
            provider.cities = sorted(provider.cities)
    return f


@cache
def _faker(locale: str) -> Faker:
    return reproducible_faker(locale)


@dataclass
class _Person:
    first: str
    last: str
    female: bool

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class _Ctx:
    """Per-record state: the random source and the people and places the record talks about."""

    rng: random.Random
    name_locales: Sequence[str]
    people: dict[str, _Person] = field(default_factory=dict)
    place: tuple[str, str] | None = None

    def fake(self, locale: str = "en_US") -> Faker:
        f = _faker(locale)
        f.seed_instance(self.rng.getrandbits(32))
        return f

    def person(self, role: str) -> _Person:
        if role not in self.people:
            self.people[role] = _new_person(self)
        return self.people[role]

    def us_place(self) -> tuple[str, str]:
        if self.place is None:
            self.place = self.rng.choice(_US_PLACES)
        return self.place


def _new_person(ctx: _Ctx) -> _Person:
    locale = ctx.rng.choice(ctx.name_locales)
    f = ctx.fake(locale)
    female = ctx.rng.random() < 0.5
    if locale in _ROMANISED_LOCALES:
        first, last = f.first_romanized_name(), f.last_romanized_name()
    else:
        first = f.first_name_female() if female else f.first_name_male()
        last = f.last_name()
    return _Person(first.split()[0], last, female)


# ---- identifier makers: each returns the text to plant ------------------------------------------------


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these digits get doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _card(ctx: _Ctx) -> str:
    rng = ctx.rng
    prefix, length = rng.choice((("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16), ("2221", 16)))
    num = _luhn_complete(prefix, length, rng)
    style = rng.randrange(3)
    if style == 0 or length == 15:
        return num
    sep = " " if style == 1 else "-"
    return sep.join(num[i : i + 4] for i in range(0, 16, 4))


def _routing(ctx: _Ctx) -> str:
    """An ABA routing number with a valid 3-7-1 checksum."""
    digits = [ctx.rng.randrange(10) for _ in range(8)]
    digits[0] = ctx.rng.choice((0, 1, 2, 3))
    s = 3 * (digits[0] + digits[3] + digits[6]) + 7 * (digits[1] + digits[4] + digits[7])
    s += digits[2] + digits[5]
    return "".join(map(str, digits)) + str((10 - s % 10) % 10)


def _date(ctx: _Ctx, *, born: bool = False) -> str:
    rng = ctx.rng
    d = (
        date(1930, 1, 1) + timedelta(days=rng.randrange(26000))
        if born
        else (date(2019, 1, 1) + timedelta(days=rng.randrange(2500)))
    )
    month, mon = d.strftime("%B"), d.strftime("%b")
    return rng.choice(
        (
            f"{d.month:02d}/{d.day:02d}/{d.year}",
            f"{d.month}/{d.day}/{d.year}",
            f"{month} {d.day}, {d.year}",
            f"{d.day} {mon} {d.year}",
            d.isoformat(),
            f"{d.day:02d}.{d.month:02d}.{d.year}",
            f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
            f"{mon} {d.day}",
            f"{d.day} {month} {d.year}",
        )
    )


def _phone(ctx: _Ctx) -> str:
    rng = ctx.rng
    area, exch = rng.choice(_AREA_CODES), f"{rng.randrange(2, 10)}{rng.randrange(10)}{rng.randrange(10)}"
    line = f"{rng.randrange(10000):04d}"
    if rng.random() < 0.15:
        return rng.choice(("+44 20 7946 ", "+49 30 901820", "+33 1 42 68 53 ")) + f"{rng.randrange(1000):03d}"
    return rng.choice(
        (
            f"({area}) {exch}-{line}",
            f"{area}-{exch}-{line}",
            f"{area}.{exch}.{line}",
            f"+1 {area} {exch} {line}",
            f"+1-{area}-{exch}-{line}",
        )
    )


def _email(ctx: _Ctx, p: _Person) -> str:
    f = ctx.fake()
    local = ctx.rng.choice((f"{p.first}.{p.last}", f"{p.first[0]}{p.last}", f"{p.last}{ctx.rng.randrange(100)}"))
    local = "".join(c for c in local.lower() if c.isascii() and (c.isalnum() or c == "."))
    return f"{local}@{f.free_email_domain() if ctx.rng.random() < 0.6 else f.domain_name()}"


def _ssn(ctx: _Ctx) -> str:
    s = ctx.fake().ssn()
    return ctx.rng.choice((s, s.replace("-", " "), s.replace("-", "") if ctx.rng.random() < 0.3 else s))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _upper(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _mrn(ctx: _Ctx) -> str:
    rng = ctx.rng
    return rng.choice(
        (
            _digits(rng, 8),
            _digits(rng, 7),
            f"{_digits(rng, 4)}-{_digits(rng, 3)}",
            f"{_upper(rng, 1)}{_digits(rng, 7)}",
            f"MR{_digits(rng, 6)}",
        )
    )


def _health_plan(ctx: _Ctx) -> str:
    rng = ctx.rng
    mbi = f"{rng.randrange(1, 10)}{_upper(rng, 2)}{rng.randrange(10)}-{_alnum(rng, 3)}-{_alnum(rng, 4)}"
    return rng.choice((f"{_upper(rng, 3)}{_digits(rng, 9)}", f"H{_digits(rng, 8)}", mbi, f"{_digits(rng, 8)}A"))


def _account(ctx: _Ctx) -> str:
    rng = ctx.rng
    return rng.choice((_digits(rng, 10), _digits(rng, 12), f"{_digits(rng, 4)}-{_digits(rng, 6)}", _digits(rng, 8)))


def _license(ctx: _Ctx) -> str:
    rng = ctx.rng
    dashed = f"{_upper(rng, 1)}{_digits(rng, 3)}-{_digits(rng, 4)}-{_digits(rng, 4)}"
    return rng.choice(
        (f"{_upper(rng, 1)}{_digits(rng, 7)}", dashed, f"{_upper(rng, 2)}{_digits(rng, 7)}", _digits(rng, 9))
    )


def _vin(ctx: _Ctx) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # VINs never use I, O or Q
    return "".join(ctx.rng.choice(alphabet) for _ in range(17))


def _plate(ctx: _Ctx) -> str:
    rng = ctx.rng
    return rng.choice(
        (f"{rng.randrange(1, 10)}{_upper(rng, 3)}{_digits(rng, 3)}", f"{_upper(rng, 3)}-{_digits(rng, 4)}")
    )


def _device(ctx: _Ctx) -> str:
    rng = ctx.rng
    mac = ":".join(f"{rng.randrange(256):02X}" for _ in range(6))
    return rng.choice(
        (
            f"SN-{_alnum(rng, 8)}",
            f"{_upper(rng, 3)}-{_digits(rng, 4)}-{_digits(rng, 6)}",
            f"{_upper(rng, 2)}{_digits(rng, 6)}{_upper(rng, 1)}",
            mac,
        )
    )


def _url(ctx: _Ctx, p: _Person) -> str:
    f = ctx.fake()
    slug = f"{p.first}-{p.last}".lower().encode("ascii", "ignore").decode()
    return ctx.rng.choice(
        (
            f"https://{f.domain_name()}/patients/{_digits(ctx.rng, 6)}",
            f"http://www.{f.domain_name()}/~{slug}",
            f"https://portal.{f.domain_name()}/u/{slug}",
            f"www.{f.domain_name()}/profile/{_digits(ctx.rng, 5)}",
        )
    )


def _ip(ctx: _Ctx) -> str:
    f = ctx.fake()
    return f.ipv6() if ctx.rng.random() < 0.2 else f.ipv4_public()


def _street(ctx: _Ctx) -> str:
    return ctx.fake().street_address()


def _intl_address(ctx: _Ctx) -> tuple[str, str, str]:
    loc = ctx.rng.choice(("de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_GB"))
    f = ctx.fake(loc)
    return f.street_address(), f.postcode(), f.city()


def _age(ctx: _Ctx) -> int:
    return ctx.rng.choice((ctx.rng.randrange(18, 90), ctx.rng.randrange(90, 106)))


# ---- a record under construction ------------------------------------------------------------------


class RecordBuilder:
    """A record written left to right: each planted identifier's span is where it lands in the text.
    The held-out family (bench/scrub_heldout.py) writes its own templates with it."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._spans: list[Span] = []
        self._len = 0

    def add(self, text: str) -> Self:
        self._parts.append(text)
        self._len += len(text)
        return self

    def pii(self, entity_type: str, value: str) -> Self:
        self._spans.append(Span(entity_type, value, self._len, self._len + len(value)))
        return self.add(value)

    def age(self, age: int, suffix: str = "") -> Self:
        # Only ages over 89 are Safe Harbor identifiers; younger ages are ordinary clinical content.
        return self.pii("AGE", str(age)).add(suffix) if age > 89 else self.add(f"{age}{suffix}")

    def build(self) -> LabelledRecord:
        return LabelledRecord("".join(self._parts), tuple(self._spans))


def _title(p: _Person, rng: random.Random) -> str:
    return rng.choice(("Mrs.", "Ms.")) if p.female else "Mr."


def _city_state_zip(b: RecordBuilder, ctx: _Ctx) -> None:
    city, state = ctx.us_place()
    zip5 = _digits(ctx.rng, 5)
    b.pii("LOCATION", city).add(f", {state} ").pii(
        "LOCATION", zip5 if ctx.rng.random() < 0.7 else zip5 + "-" + _digits(ctx.rng, 4)
    )


# ---- clinical templates ---------------------------------------------------------------------------


def _note_intake(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p, dr = ctx.rng, ctx.person("patient"), ctx.person("doctor")
    b.add("Patient: ").pii("PERSON", p.full).add(", DOB ").pii("DATE_TIME", _date(ctx, born=True))
    b.add(", MRN ").pii("MEDICAL_RECORD_NUMBER", _mrn(ctx)).add(".\nSeen by Dr. ").pii("PERSON", dr.full)
    b.add(f" at {rng.choice(_HOSPITALS)}, ").pii("LOCATION", ctx.us_place()[0]).add(" on ").pii("DATE_TIME", _date(ctx))
    b.add(f".\nPresents with {rng.choice(_SYMPTOMS)}. History of {rng.choice(_CONDITIONS)}.\n")
    b.add(
        f"Vitals: BP {rng.randrange(100, 180)}/{rng.randrange(60, 110)}, HR {rng.randrange(55, 120)}, "
        f"SpO2 {rng.randrange(88, 100)}%.\nPlan: {rng.choice(_PLANS)}. Call "
    ).pii("PHONE_NUMBER", _phone(ctx))
    b.add(" with questions.")


def _note_discharge(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("DISCHARGE SUMMARY\nName: ").pii("PERSON", f"{p.last}, {p.first}").add("   MRN: ").pii(
        "MEDICAL_RECORD_NUMBER", _mrn(ctx)
    )
    b.add("\nAdmitted: ").pii("DATE_TIME", _date(ctx)).add("  Discharged: ").pii("DATE_TIME", _date(ctx))
    b.add(f"\nDiagnosis: {rng.choice(_CONDITIONS)}.\nHospital course: {_title(p, rng)} ").pii("PERSON", p.last)
    b.add(
        f" was treated with {rng.choice(_MEDS)} and improved. Discharge medications: {rng.choice(_MEDS)}; "
        f"{rng.choice(_MEDS)}.\nFollow-up with Dr. "
    ).pii("PERSON", ctx.person("doctor").last)
    b.add(" in 1 week. Attending: ").pii("PERSON", ctx.person("attending").full).add(", MD")


def _note_referral(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("Dear Dr. ").pii("PERSON", ctx.person("doctor").last).add(",\n\nThank you for seeing ")
    b.pii("PERSON", p.full).add(", a ").age(_age(ctx), "-year-old").add(f" {'woman' if p.female else 'man'} with ")
    b.add(f"{rng.choice(_CONDITIONS)} and {rng.choice(_CONDITIONS)}. {'She' if p.female else 'He'} reports ")
    b.add(f"{rng.choice(_SYMPTOMS)} since ").pii("DATE_TIME", _date(ctx)).add(
        f". Current medications: {rng.choice(_MEDS)}."
    )
    b.add(" Insurance member ID ").pii("HEALTH_PLAN_NUMBER", _health_plan(ctx)).add(".\n\nKind regards,\n")
    b.pii("PERSON", ctx.person("author").full).add(f"\n{rng.choice(_HOSPITALS)}")


def _note_social(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("Social history: ").pii("PERSON", p.first).add(" lives in ").pii("LOCATION", ctx.us_place()[0])
    b.add(" with her daughter " if p.female else " with his son ").pii("PERSON", ctx.person("relative").full)
    b.add(", who can be reached at ").pii("PHONE_NUMBER", _phone(ctx)).add(". Address: ").pii("LOCATION", _street(ctx))
    b.add(", ")
    _city_state_zip(b, ctx)
    b.add(
        f". Former smoker, quit in {rng.randrange(1990, 2020)}. Drinks socially. Works as a "
        f"{rng.choice(('teacher', 'truck driver', 'nurse', 'accountant', 'farmer', 'retired machinist'))}."
    )


def _note_ed(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("ED triage ").pii("DATE_TIME", _date(ctx)).add(f" {rng.randrange(24):02d}:{rng.randrange(60):02d}. ")
    b.age(_age(ctx), " yo").add(" brought in by ambulance with ").add(rng.choice(_SYMPTOMS))
    b.add(". Pt identified as ").pii("PERSON", p.full).add(" (SSN ").pii("US_SSN", _ssn(ctx)).add(")")
    b.add(" from driver's license ").pii("LICENSE_NUMBER", _license(ctx)).add(". Vehicle VIN ").pii(
        "VEHICLE_ID", _vin(ctx)
    )
    b.add(f" towed from scene. Temp {rng.uniform(36.0, 40.0):.1f} C, RR {rng.randrange(12, 30)}.")


def _note_device(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    device = rng.choice(_DEVICES)
    b.add("Device clinic note for ").pii("PERSON", p.full).add(f". Interrogated {device}, serial number ")
    b.pii("DEVICE_ID", _device(ctx)).add(", implanted ").pii("DATE_TIME", _date(ctx)).add(". Battery adequate. ")
    b.add("Remote monitoring data uploaded from IP ").pii("IP_ADDRESS", _ip(ctx)).add(
        f". Continue {rng.choice(_MEDS)}."
    )
    b.add(" Patient portal: ").pii("URL", _url(ctx, p)).add(".")


def _note_phone(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("Telephone encounter. Spoke with ").pii("PERSON", p.full).add(" (MRN ").pii(
        "MEDICAL_RECORD_NUMBER", _mrn(ctx)
    )
    b.add(f") regarding {rng.choice(_CONDITIONS)}. Reports {rng.choice(_SYMPTOMS)}. Advised {rng.choice(_PLANS)}.")
    b.add(" Callback number ").pii("PHONE_NUMBER", _phone(ctx)).add("; email ").pii("EMAIL_ADDRESS", _email(ctx, p))
    b.add(".\n-- ").pii("PERSON", ctx.person("nurse").full).add(", RN")


def _note_progress(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add(f"Progress note. {_title(p, rng)} ").pii("PERSON", p.last).add(" is a ").age(_age(ctx), "-year-old")
    b.add(f" with {rng.choice(_CONDITIONS)}. Overnight: {rng.choice(_SYMPTOMS)}. Labs: Na {rng.randrange(128, 146)}, ")
    b.add(f"K {rng.uniform(3.0, 5.5):.1f}, Cr {rng.uniform(0.6, 2.8):.1f}, WBC {rng.uniform(3.5, 18.0):.1f}. ")
    b.add(f"Assessment: {rng.choice(_CONDITIONS)}. Plan: {rng.choice(_PLANS)}; {rng.choice(_MEDS)}. ")
    b.add("Daughter ").pii("PERSON", ctx.person("relative").first).add(" updated by phone.")


def _note_billing(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("Billing / registration\nPatient name: ").pii("PERSON", p.full).add("\nDate of birth: ")
    b.pii("DATE_TIME", _date(ctx, born=True)).add("\nSSN: ").pii("US_SSN", _ssn(ctx)).add(
        "\nHealth plan: Medicare, ID "
    )
    b.pii("HEALTH_PLAN_NUMBER", _health_plan(ctx)).add("\nAccount no.: ").pii("ACCOUNT_NUMBER", _account(ctx))
    b.add("\nHome: ").pii("LOCATION", _street(ctx)).add(", ")
    _city_state_zip(b, ctx)
    b.add("\nFax: ").pii("PHONE_NUMBER", _phone(ctx)).add(f"\nReason for visit: {rng.choice(_CONDITIONS)}")


def _note_geriatric(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    age = rng.randrange(90, 106)
    b.add("Geriatric assessment. ").pii("PERSON", p.full).add(", aged ").pii("AGE", str(age))
    b.add(", resident of Maple Grove care home in ").pii("LOCATION", ctx.us_place()[0])
    b.add(
        f". Falls risk high; {rng.choice(_SYMPTOMS)}. Medications reviewed: {rng.choice(_MEDS)}, "
        f"{rng.choice(_MEDS)}. Next of kin: "
    ).pii("PERSON", ctx.person("relative").full).add(", ")
    b.pii("PHONE_NUMBER", _phone(ctx)).add(". Reviewed on ").pii("DATE_TIME", _date(ctx)).add(".")


def _note_prescription(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add(f"Rx: {rng.choice(_MEDS)}, #30, 2 refills.\nFor: ").pii("PERSON", p.full).add(", ")
    b.pii("LOCATION", _street(ctx)).add("\nPrescriber: Dr. ").pii("PERSON", ctx.person("doctor").full)
    b.add(", DEA ").pii("LICENSE_NUMBER", f"{_upper(rng, 2)}{_digits(rng, 7)}").add(", NPI ").pii(
        "LICENSE_NUMBER", _digits(rng, 10)
    )
    b.add("\nDate: ").pii("DATE_TIME", _date(ctx)).add(f"\nIndication: {rng.choice(_CONDITIONS)}.")


def _note_imaging(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("patient")
    b.add("RADIOLOGY REPORT - CT chest with contrast\nPatient: ").pii("PERSON", f"{p.last.upper()}, {p.first.upper()}")
    b.add("  MRN#: ").pii("MEDICAL_RECORD_NUMBER", _mrn(ctx)).add("  Exam date: ").pii("DATE_TIME", _date(ctx))
    findings = rng.choice(
        (
            "no acute abnormality",
            "small right pleural effusion",
            "a 6 mm nodule in the left upper lobe",
            "patchy consolidation at the right base",
        )
    )
    b.add(f"\nIndication: {rng.choice(_SYMPTOMS)}.\nFindings: {findings}.")
    b.add("\nImages viewable at ").pii("URL", _url(ctx, p)).add("\nRead by: ").pii(
        "PERSON", ctx.person("doctor").full
    ).add(", MD")


CLINICAL_TEMPLATES: tuple[Callable[[RecordBuilder, _Ctx], None], ...] = (
    _note_intake,
    _note_discharge,
    _note_referral,
    _note_social,
    _note_ed,
    _note_device,
    _note_phone,
    _note_progress,
    _note_billing,
    _note_geriatric,
    _note_prescription,
    _note_imaging,
)


# ---- bank templates -------------------------------------------------------------------------------


def _msg_card(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    b.add("Hi, this is ").pii("PERSON", p.full)
    b.add(f". {rng.choice(_BANK_TOPICS).capitalize()}. My card number is ").pii("CREDIT_CARD", _card(ctx))
    b.add(f", expiry {rng.randrange(1, 13):02d}/{rng.randrange(26, 31)}. Please call me on ")
    b.pii("PHONE_NUMBER", _phone(ctx)).add(". Thanks")


def _msg_transfer(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p, payee = ctx.rng, ctx.person("customer"), ctx.person("payee")
    b.add(f"I sent {rng.randrange(50, 5000)} EUR on ").pii("DATE_TIME", _date(ctx)).add(" to ").pii(
        "PERSON", payee.full
    )
    b.add(", IBAN ").pii(
        "IBAN_CODE", ctx.fake(rng.choice(("de_DE", "fr_FR", "nl_NL", "es_ES", "en_GB", "it_IT"))).iban()
    )
    b.add(", BIC ").pii(
        "SWIFT_CODE", ctx.fake(rng.choice(("de_DE", "fr_FR", "en_GB"))).swift(length=rng.choice((8, 11)))
    )
    b.add(f", but it still shows as pending. {rng.choice(_BANK_TOPICS).capitalize()}.\nRegards,\n").pii(
        "PERSON", p.full
    )


def _msg_ach(b: RecordBuilder, ctx: _Ctx) -> None:
    p = ctx.person("customer")
    b.add("Please set up direct deposit: routing number ").pii("ROUTING_NUMBER", _routing(ctx))
    b.add(", account number ").pii("ACCOUNT_NUMBER", _account(ctx)).add(". Name on the account: ").pii("PERSON", p.full)
    b.add(". Employer payroll starts ").pii("DATE_TIME", _date(ctx)).add(". Reach me at ").pii(
        "EMAIL_ADDRESS", _email(ctx, p)
    ).add(".")


def _msg_address(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    b.add("Hello, I moved. New address: ").pii("LOCATION", _street(ctx)).add(", ")
    _city_state_zip(b, ctx)
    b.add(". Old one was in ").pii("LOCATION", ctx.rng.choice(_US_PLACES)[0]).add(". Customer: ").pii("PERSON", p.full)
    b.add(", SSN ").pii("US_SSN", _ssn(ctx)).add(f". Also {rng.choice(_BANK_TOPICS)}.")


def _msg_intl(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    street, postcode, city = _intl_address(ctx)
    b.add("Dear Sir or Madam, I live abroad now at ").pii("LOCATION", street).add(", ").pii("LOCATION", postcode).add(
        " "
    )
    b.pii("LOCATION", city).add(". Please send statements there and update my phone to ").pii(
        "PHONE_NUMBER", _phone(ctx)
    )
    b.add(". My account IBAN is ").pii("IBAN_CODE", ctx.fake(rng.choice(("de_DE", "nl_NL", "fr_FR"))).iban())
    b.add(".\nYours faithfully,\n").pii("PERSON", p.full)


def _msg_fraud(b: RecordBuilder, ctx: _Ctx) -> None:
    p = ctx.person("customer")
    b.add("FRAUD ALERT from ").pii("PERSON", p.full).add(": someone logged in from IP ").pii("IP_ADDRESS", _ip(ctx))
    b.add(" on ").pii("DATE_TIME", _date(ctx)).add(" and tried card ").pii("CREDIT_CARD", _card(ctx))
    b.add(". They changed my email to ").pii("EMAIL_ADDRESS", _email(ctx, ctx.person("fraudster"))).add(
        ". Block everything!"
    )


def _msg_loan(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    b.add("Car loan application. Applicant: ").pii("PERSON", p.full).add(", born ").pii(
        "DATE_TIME", _date(ctx, born=True)
    )
    b.add(". Driver licence ").pii("LICENSE_NUMBER", _license(ctx)).add(". Vehicle: 2021 sedan, VIN ").pii(
        "VEHICLE_ID", _vin(ctx)
    )
    b.add(", plate ").pii("VEHICLE_ID", _plate(ctx)).add(
        f". Requested amount ${rng.randrange(5, 60)},000 over 60 months."
    )


def _msg_online(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    b.add(f"{rng.choice(('Hi', 'Hello', 'Good morning'))}, I can't log into online banking from my phone (device ID ")
    b.pii("DEVICE_ID", _device(ctx)).add("). The page ").pii("URL", _url(ctx, p)).add(" just spins. Acct ")
    b.pii("ACCOUNT_NUMBER", _account(ctx)).add(". Thanks, ").pii("PERSON", p.first)


def _msg_joint(b: RecordBuilder, ctx: _Ctx) -> None:
    p, q = ctx.person("customer"), ctx.person("partner")
    b.add("We would like to open a joint account for ").pii("PERSON", p.full).add(" and ").pii("PERSON", q.full)
    b.add(". Our address is ").pii("LOCATION", _street(ctx)).add(", ")
    _city_state_zip(b, ctx)
    b.add(". Contact: ").pii("EMAIL_ADDRESS", _email(ctx, q)).add(" or ").pii("PHONE_NUMBER", _phone(ctx)).add(".")


def _msg_wire(b: RecordBuilder, ctx: _Ctx) -> None:
    rng, p = ctx.rng, ctx.person("customer")
    b.add("Wire instructions for ").pii("PERSON", ctx.person("payee").full).add(": SWIFT ")
    b.pii(
        "SWIFT_CODE",
        ctx.fake(rng.choice(("en_GB", "de_DE", "nl_NL", "it_IT"))).swift(length=rng.choice((8, 11))),
    )
    b.add(", account ").pii("ACCOUNT_NUMBER", _account(ctx)).add(f". Amount {rng.randrange(1000, 90000)} USD. Sender: ")
    b.pii("PERSON", p.full).add(", ").pii("EMAIL_ADDRESS", _email(ctx, p))


BANK_TEMPLATES: tuple[Callable[[RecordBuilder, _Ctx], None], ...] = (
    _msg_card,
    _msg_transfer,
    _msg_ach,
    _msg_address,
    _msg_intl,
    _msg_fraud,
    _msg_loan,
    _msg_online,
    _msg_joint,
    _msg_wire,
)


def _make(
    n: int,
    seed: int,
    templates: Sequence[Callable[[RecordBuilder, _Ctx], None]],
    name_locales: Sequence[str] | None,
) -> list[LabelledRecord]:
    if n < 0:
        raise ConfigError(f"`n` must be >= 0, got {n}.")
    locales = tuple(name_locales) if name_locales is not None else NAME_LOCALES
    unknown = [loc for loc in locales if loc not in NAME_LOCALES]
    if not locales or unknown:
        raise ConfigError(f"`name_locales` must be a non-empty subset of NAME_LOCALES, got {list(locales)}.")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ctx = _Ctx(random.Random(rng.getrandbits(64)), locales)
        b = RecordBuilder()
        rng.choice(templates)(b, ctx)
        out.append(b.build())
    return out


def make_clinical_notes(n: int, *, seed: int, name_locales: Sequence[str] | None = None) -> list[LabelledRecord]:
    """`n` clinical-note-like records, deterministic for `seed`."""
    return _make(n, seed, CLINICAL_TEMPLATES, name_locales)


def make_bank_messages(n: int, *, seed: int, name_locales: Sequence[str] | None = None) -> list[LabelledRecord]:
    """`n` bank-customer-message-like records, deterministic for `seed`."""
    return _make(n, seed, BANK_TEMPLATES, name_locales)
