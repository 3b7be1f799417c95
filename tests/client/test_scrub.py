"""PII scrubbing: planted identifiers never survive, pseudonyms are keyed and stable, fail-closed."""

import json
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.recognizers import is_common
from client.scrub import ScrubbedRecords, build_scrubber, scrub_records
from common.config_scrub import ScrubConfig, ScrubOperator
from common.errors import ConfigError, ScrubFailed
from silo.synthetic import make_bank_messages, make_clinical_notes


@pytest.fixture(scope="session")
def scrubber():
    return build_scrubber(ScrubConfig())


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "site.key"
    path.write_bytes(b"0123456789abcdef-site-a-secret")
    return path


@pytest.fixture(scope="session")
def pseudonymizer(key_file):
    return build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(key_file)))


def _survives(value: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text) is not None


# ---- planted identifiers of every supported type -------------------------------------------------------

_name_word = (
    st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=10)
    .map(str.capitalize)
    .filter(lambda w: not is_common(w))
)


def _luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _aba(body: str) -> str:
    d = [int(c) for c in body]
    s = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5]
    return body + str((10 - s % 10) % 10)


def _iban(bban: str) -> str:
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    return f"DE{98 - int(digits) % 97:02d}{bban}"


_digits = st.text(alphabet=string.digits, min_size=1, max_size=1)


def _num(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=string.digits, min_size=n, max_size=n)


_MONTHS = ("January", "March", "June", "September", "December")
_date = st.builds(
    lambda d, fmt: fmt(d),
    st.dates(),
    st.sampled_from(
        [
            lambda d: f"{d.month:02d}/{d.day:02d}/{d.year:04d}",
            lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}",
            lambda d: f"{_MONTHS[d.month % 5]} {d.day}, {d.year:04d}",
            lambda d: f"{d.day} {_MONTHS[d.month % 5]} {d.year:04d}",
            lambda d: f"{d.day:02d}.{d.month:02d}.{d.year:04d}",
        ]
    ),
)
_vin = st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=17, max_size=17).filter(
    lambda v: any(c.isdigit() for c in v) and any(c.isalpha() for c in v)
)

_PLANTED = {
    "PERSON": st.tuples(_name_word, _name_word).map(" ".join),
    "DATE_TIME": _date,
    "AGE": st.integers(90, 119).map(str),
    "PHONE_NUMBER": st.tuples(st.integers(201, 989), st.integers(200, 999), _num(4)).map(
        lambda t: f"({t[0]}) {t[1]}-{t[2]}"
    ),
    "EMAIL_ADDRESS": st.tuples(_name_word, _name_word).map(lambda t: f"{t[0].lower()}.{t[1].lower()}@example.org"),
    "US_SSN": st.tuples(st.integers(1, 665), st.integers(1, 99), st.integers(1, 9999)).map(
        lambda t: f"{t[0]:03d}-{t[1]:02d}-{t[2]:04d}"
    ),
    "MEDICAL_RECORD_NUMBER": _num(8),
    "HEALTH_PLAN_NUMBER": st.tuples(st.text(string.ascii_uppercase, min_size=3, max_size=3), _num(9)).map("".join),
    "ACCOUNT_NUMBER": _num(11),
    "ROUTING_NUMBER": _num(8).map(_aba),
    "CREDIT_CARD": _num(14).map(lambda b: _luhn("4" + b)),
    "IBAN_CODE": _num(18).map(_iban),
    "SWIFT_CODE": st.tuples(st.text(string.ascii_uppercase, min_size=4, max_size=4), st.sampled_from(["DE", "FR", "GB", "US"]), _num(2)).map("".join),
    "LICENSE_NUMBER": st.tuples(st.sampled_from("ABDS"), _num(7)).map("".join),
    "VEHICLE_ID": _vin,
    "DEVICE_ID": st.tuples(st.text(string.ascii_uppercase, min_size=2, max_size=2), _num(6)).map("-".join),
    "URL": _name_word.map(lambda w: f"https://portal.example.com/u/{w.lower()}"),
    "IP_ADDRESS": st.ip_addresses(v=4).map(str),
    "LOCATION": st.tuples(st.integers(1, 9999), _name_word).map(lambda t: f"{t[0]} {t[1]} Street"),
}  # fmt: skip


def _note(v: dict[str, str]) -> str:
    return (
        f"Patient: {v['PERSON']}, DOB {v['DATE_TIME']}, MRN {v['MEDICAL_RECORD_NUMBER']}. "
        f"A {v['AGE']}-year-old seen for cough. Phone {v['PHONE_NUMBER']}, email {v['EMAIL_ADDRESS']}, "
        f"SSN {v['US_SSN']}. Member ID {v['HEALTH_PLAN_NUMBER']}. Account {v['ACCOUNT_NUMBER']}, routing "
        f"number {v['ROUTING_NUMBER']}, card {v['CREDIT_CARD']}, IBAN {v['IBAN_CODE']}, SWIFT {v['SWIFT_CODE']}. "
        f"Driver's license {v['LICENSE_NUMBER']}; VIN {v['VEHICLE_ID']}; pump serial {v['DEVICE_ID']}. "
        f"Portal {v['URL']} from IP {v['IP_ADDRESS']}. Lives at {v['LOCATION']}, Springfield, IL 62704."
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries(_PLANTED))
def test_scrub_text_planted_identifiers_never_survive(scrubber, values):
    scrubbed, counts = scrubber.scrub_text(_note(values))
    for entity_type, value in values.items():
        assert not _survives(value, scrubbed), f"{entity_type} {value!r} survived in {scrubbed!r}"
    assert not _survives("Springfield", scrubbed) and "62704" not in scrubbed
    assert sum(counts.values()) >= len(values)


def test_scrub_text_replace_keeps_clinical_content(scrubber):
    text = "Seen by Dr. Okonkwo on 03/14/2023 for type 2 diabetes; metformin 500 mg twice daily. BP 142/88."
    scrubbed, counts = scrubber.scrub_text(text)
    assert (
        scrubbed == "Seen by Dr. <PERSON> on <DATE_TIME> for type 2 diabetes; metformin 500 mg twice daily. BP 142/88."
    )
    assert counts == {"PERSON": 1, "DATE_TIME": 1}


def test_scrub_text_ages_up_to_89_are_kept(scrubber):
    scrubbed, _ = scrubber.scrub_text("A 67-year-old man and his 93-year-old mother.")
    assert "67-year-old" in scrubbed and "93" not in scrubbed


def test_scrub_text_names_from_held_out_locales_are_scrubbed(scrubber):
    # Yoruba, Zulu, Icelandic and Vietnamese names: none of these locales feed the name list.
    text = (
        "Patient: Adesua Ogunbamigbe. Daughter Nokulunga Mnyoni visited. Dear Dr. Gunndórsdóttir, "
        "thank you for seeing Ngọc Đặng, who lives in Piershil.\nKind regards,\nBabatunji Makinde"
    )
    scrubbed, _ = scrubber.scrub_text(text)
    for value in ("Adesua", "Ogunbamigbe", "Nokulunga", "Mnyoni", "Gunndórsdóttir", "Ngọc", "Đặng", "Piershil",
                  "Babatunji", "Makinde"):  # fmt: skip
        assert not _survives(value, scrubbed), scrubbed


def test_scrub_text_redact_removes_values(key_file):
    redactor = build_scrubber(ScrubConfig(operator=ScrubOperator.REDACT))
    scrubbed, _ = redactor.scrub_text("Call 617-555-0142 or mail jo.ade@example.org.")
    assert scrubbed == "Call  or mail ."


# ---- pseudonyms ------------------------------------------------------------------------------------


def test_pseudonym_is_consistent_within_a_site(pseudonymizer):
    scrubbed, _ = pseudonymizer.scrub_text("Patient: Amara Okafor. Mrs. Okafor reports fever. Dr. Lindqvist agrees.")
    tokens = re.findall(r"<PERSON_[0-9a-f]{8}>", scrubbed)
    assert len(tokens) == 3
    assert "Okafor" not in scrubbed and "Lindqvist" not in scrubbed
    # The same value always gets the same token; different values get different ones.
    assert pseudonymizer.pseudonym("PERSON", "Okafor") == pseudonymizer.pseudonym("PERSON", "OKAFOR")
    assert pseudonymizer.pseudonym("PERSON", "Okafor") != pseudonymizer.pseudonym("PERSON", "Lindqvist")


def test_pseudonym_is_deterministic_for_a_key(pseudonymizer, key_file, tmp_path):
    text = "Patient: Amara Okafor, MRN 00482913, phone (617) 555-0142."
    again = build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(key_file)))
    assert pseudonymizer.scrub_text(text) == again.scrub_text(text)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"another-site-secret-key-material")
    other = build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(other_key)))
    assert other.scrub_text(text)[0] != pseudonymizer.scrub_text(text)[0]


def test_build_scrubber_rejects_short_or_missing_key(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"tooshort")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(short)))
    with pytest.raises(ConfigError, match="cannot be read"):
        build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(tmp_path / "absent.key")))


# ---- fail-closed -----------------------------------------------------------------------------------


def test_scrubbed_records_cannot_be_made_outside_scrub_records():
    with pytest.raises(ScrubFailed, match="scrub_records"):
        ScrubbedRecords([{"text": "Patient: Amara Okafor"}])
    with pytest.raises(ScrubFailed):
        ScrubbedRecords([{"text": "x"}], _seal=object())


def test_scrub_records_quarantines_what_cannot_be_scrubbed(scrubber):
    records = [
        {"id": 1, "text": "Patient: Amara Okafor, MRN 00482913."},
        {"id": 2, "body": "no text field"},
        {"id": 3, "text": 12345678},
        "not a record",
        # A bare listed surname on its own line scores below the threshold: the second pass catches it.
        {"id": 5, "text": "Report reviewed.\nMartinez\nCough."},
        {"id": 6, "text": "Plain clinical text with no identifiers."},
    ]
    seen = []
    result = scrub_records(records, scrubber, progress=seen.append)
    assert isinstance(result.records, ScrubbedRecords)
    assert [r["id"] for r in result.records] == [1, 6]
    assert result.records[0]["text"] == "Patient: <PERSON>, MRN <MEDICAL_RECORD_NUMBER>."
    assert result.quarantined == 4
    assert result.report["quarantine_reasons"] == {
        "missing_field": 1, "not_a_record": 1, "not_text": 1, "residual_identifier": 1,
    }  # fmt: skip
    assert result.report["records_in"] == 6 and result.report["records_out"] == 2
    assert seen == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError):
        result.records[0]["text"] = "Amara Okafor"  # read-only views


def test_scrub_records_second_pass_can_be_turned_off():
    lenient = build_scrubber(ScrubConfig(second_pass=False))
    result = scrub_records([{"text": "Report reviewed.\nMartinez\nCough."}], lenient)
    assert result.quarantined == 0


def test_scrub_records_report_never_contains_a_raw_value(scrubber):
    notes = make_clinical_notes(40, seed=99) + make_bank_messages(40, seed=99)
    result = scrub_records(({"text": n.text} for n in notes), scrubber)
    report = json.dumps(result.report)
    for note in notes:
        for span in note.spans:
            if len(span.entity_value) > 3:
                assert span.entity_value not in report
    assert result.report["entities"]["PERSON"] > 0
    assert result.report["records_in"] == 80


def test_scrub_records_only_named_fields_are_scrubbed():
    two_fields = build_scrubber(ScrubConfig(fields=("subject", "body")))
    record = {"subject": "Card for Amara Okafor", "body": "Card 4111 1111 1111 1111 lost.", "meta": "Amara Okafor"}
    [out] = scrub_records([record], two_fields).records
    assert out["subject"] == "Card for <PERSON>"
    assert out["body"] == "Card <CREDIT_CARD> lost."
    assert out["meta"] == "Amara Okafor"  # not a configured field: copied unchanged


# ---- building the analyzer ------------------------------------------------------------------------


def test_build_scrubber_fails_closed_on_a_missing_ner_model():
    with pytest.raises(ScrubFailed, match="could not build the PII analyzer"):
        build_scrubber(ScrubConfig(ner_model="/nonexistent/ner-model"))


def test_build_scrubber_adds_a_site_spacy_model(tmp_path):
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "zorblax"}, {"LOWER": "quux"}]}])
    nlp.to_disk(tmp_path / "site-ner")
    text = "the note mentions zorblax quux twice"
    offline = build_scrubber(ScrubConfig())
    with_ner = build_scrubber(ScrubConfig(ner_model=str(tmp_path / "site-ner")))
    assert offline.scrub_text(text)[0] == text  # lower-case: no offline recognizer can know
    assert with_ner.scrub_text(text)[0] == "the note mentions <PERSON> twice"


# ---- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"score_threshold": 1.5}, r"`scrub.score_threshold` must be in \[0, 1\], got 1.5."),
        ({"operator": "mask"}, r"`scrub.operator` must be one of 'replace', 'pseudonym', 'redact', got 'mask'."),
        ({"operator": "pseudonym"}, r"`scrub.pseudonym_key_file` is required"),
        ({"fields": []}, r"`scrub.fields` must be a non-empty list"),
        ({"fields": ["text", "text"]}, r"must not repeat"),
        ({"second_pass": "yes"}, r"`scrub.second_pass` must be true or false"),
        ({"thresold": 0.4}, r"unknown key\(s\) in `\[scrub\]`: thresold"),
    ],
)
def test_scrub_config_rejects_invalid_values(mapping, message):
    with pytest.raises(ConfigError, match=message):
        ScrubConfig.from_mapping(mapping)


def test_scrub_config_from_mapping_accepts_toml_lists():
    config = ScrubConfig.from_mapping({"operator": "redact", "fields": ["text", "note"], "score_threshold": 0.6})
    assert config.operator is ScrubOperator.REDACT
    assert config.fields == ("text", "note")
    assert config.summary()["fields"] == ["text", "note"]
