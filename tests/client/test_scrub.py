"""PII scrubbing: planted identifiers never survive, pseudonyms are keyed and stable, fail-closed."""

import json
import re
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.normalize import HOMOGLYPHS, normalize
from client.recognizers import is_common
from client.recognizers.vocabulary import is_rare
from client.scrub import WINDOW_CHARS, ScrubbedRecords, build_scrubber, scrub_records, windows
from common.config.scrub import ScrubConfig, ScrubOperator
from common.errors import ConfigError, ScrubFailed
from silo.synthetic import make_bank_messages, make_clinical_notes


@pytest.fixture(scope="session")
def scrubber():
    return build_scrubber(ScrubConfig())


@pytest.fixture(scope="session")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "site.key"
    path.write_bytes(b"0123456789abcdef-site-a-secret")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def pseudonymizer(key_file):
    return build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(key_file)))


def _survives(value: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text) is not None


# ---- planted identifiers of every supported type -------------------------------------------------------

# A planted name: a capitalised string that is no word of English. Not merely an uncommon one: "Aaa Hospice"
# after "Patient:" names a place of care as much as a person, and is masked as one.
_name_word = (
    st.text(alphabet=string.ascii_lowercase, min_size=3, max_size=10)
    .map(str.capitalize)
    .filter(lambda w: not is_common(w) and is_rare(w))
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
    "SWIFT_CODE": st.tuples(
        st.text(string.ascii_uppercase, min_size=4, max_size=4), st.sampled_from(["DE", "FR", "GB", "US"]), _num(2)
    ).map("".join),
    "LICENSE_NUMBER": st.tuples(st.sampled_from("ABDS"), _num(7)).map("".join),
    "VEHICLE_ID": _vin,
    "DEVICE_ID": st.tuples(st.text(string.ascii_uppercase, min_size=2, max_size=2), _num(6)).map("-".join),
    "URL": _name_word.map(lambda w: f"https://portal.example.com/u/{w.lower()}"),
    "IP_ADDRESS": st.ip_addresses(v=4).map(str),
    "LOCATION": st.tuples(st.integers(1, 9999), _name_word).map(lambda t: f"{t[0]} {t[1]} Street"),
}


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
    assert scrubbed == "Seen by <PERSON> on <DATE_TIME> for type 2 diabetes; metformin 500 mg twice daily. BP 142/88."
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
    for value in (
        "Adesua",
        "Ogunbamigbe",
        "Nokulunga",
        "Mnyoni",
        "Gunndórsdóttir",
        "Ngọc",
        "Đặng",
        "Piershil",
        "Babatunji",
        "Makinde",
    ):
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
    # A title is masked with the name but does not change its pseudonym.
    assert pseudonymizer.pseudonym("PERSON", "Mrs. Okafor") == pseudonymizer.pseudonym("PERSON", "Okafor")


def test_pseudonym_is_deterministic_for_a_key(pseudonymizer, key_file, tmp_path):
    text = "Patient: Amara Okafor, MRN 00482913, phone (617) 555-0142."
    again = build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(key_file)))
    assert pseudonymizer.scrub_text(text) == again.scrub_text(text)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"another-site-secret-key-material")
    other_key.chmod(0o600)
    other = build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(other_key)))
    assert other.scrub_text(text)[0] != pseudonymizer.scrub_text(text)[0]


def test_build_scrubber_refuses_a_pseudonym_key_others_can_read(tmp_path):
    key = tmp_path / "site.key"
    key.write_bytes(b"0123456789abcdef-site-a-secret")
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        build_scrubber(ScrubConfig(operator="pseudonym", pseudonym_key_file=str(key)))


def test_build_scrubber_rejects_short_or_missing_key(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"tooshort")
    short.chmod(0o600)
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
        "missing_field": 1,
        "not_a_record": 1,
        "not_text": 1,
        "residual_identifier": 1,
    }
    assert result.report["records_in"] == 6 and result.report["records_out"] == 2
    assert seen == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TypeError):
        result.records[0]["text"] = "Amara Okafor"  # read-only views


def test_scrub_records_second_pass_can_be_turned_off():
    lenient = build_scrubber(ScrubConfig(second_pass=False))
    result = scrub_records([{"text": "Report reviewed.\nMartinez\nCough."}], lenient)
    assert result.quarantined == 0


_PLAIN = [
    "Plain clinical text with no identifiers.",
    "Report reviewed.\nMartinez\nCough.",  # a listed surname alone: below the threshold, the second pass sees it
    "Patient: Amara Okafor, MRN 00482913.",
    "Already scrubbed: <PERSON> seen at <LOCATION>; follow-up with Martinez.",  # placeholder-shaped text
    "Routine visit. " * 400 + "Seen by Dr. Halvorsen. " + "Stable. " * 800 + "Halvorsen agreed.",  # 2 windows
    "Stable. " * 1100 + "Martinez",
    # Written to slip past the shortcut: a placeholder glued to a near-threshold name, placeholder lookalikes
    # that are not placeholders, and a name hidden by a zero-width space and a Cyrillic "а".
    "Reviewed.\n<DATE_TIME>Martinez\nCough.",
    "Reviewed.\n<person> <PERSON_zz> Martinez\nCough.",
    "Reviewed.\nM\u200bartinez\nCough. Call Amar\u0430 Okafor.",
]


@pytest.mark.parametrize("second_pass", [True, False])
def test_scrub_checked_is_scrub_text_then_residual(second_pass):
    # The one-run shortcut for texts left unchanged must give exactly what the two passes give.
    checked = build_scrubber(ScrubConfig(second_pass=second_pass))
    texts = _PLAIN + [r.text for r in make_clinical_notes(40, seed=7) + make_bank_messages(40, seed=8)]
    for text in texts:
        scrubbed, counts = checked.scrub_text(text)
        expected = (scrubbed, counts, checked.residual(scrubbed) if second_pass else [])
        assert checked.scrub_checked(text) == expected, text
    assert len(windows(_PLAIN[4])) > 1 and len(windows(_PLAIN[5])) > 1


def test_a_text_with_nothing_to_replace_runs_the_recognizers_once():
    counted = build_scrubber(ScrubConfig())
    analyzer = counted._analyzer
    runs = []
    real_detect = analyzer.detect

    def detect(text, score_threshold):
        runs.append(score_threshold)
        return real_detect(text, score_threshold)

    analyzer.detect = detect
    assert counted.scrub_checked("Plain clinical text with no identifiers.") == (
        "Plain clinical text with no identifiers.",
        {},
        [],
    )
    assert runs == [0.4]  # once, at the second pass's threshold
    runs.clear()
    assert counted.scrub_checked("Report reviewed.\nMartinez\nCough.")[2] == ["PERSON"]
    assert runs == [0.4]
    runs.clear()
    assert counted.scrub_checked("Patient: Amara Okafor.")[0] == "Patient: <PERSON>."
    assert runs == [0.4, 0.4]  # the second pass reads the scrubbed text


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
    ruler.add_patterns([{"label": "PERSON", "pattern": [{"LOWER": "zorblax"}]}])
    nlp.to_disk(tmp_path / "site-ner")
    text = "the note mentions zorblax twice"
    offline = build_scrubber(ScrubConfig())
    with_ner = build_scrubber(ScrubConfig(ner_model=str(tmp_path / "site-ner")))
    assert offline.scrub_text(text)[0] == text  # one lower-case word without a cue: no offline recognizer can know
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


# ---- hostile Unicode: invisible characters, dash and space variants, full-width forms, look-alike letters ------

_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e"]
_DASHES = ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"]
_SPACES = ["\u00a0", "\u2007", "\u2009", "\u202f", "\u3000", "\u2002", "\u205f"]
_LOOKALIKES: dict[str, list[str]] = {}
for _glyph, _latin in sorted(HOMOGLYPHS.items()):
    _LOOKALIKES.setdefault(_latin, []).append(_glyph)


def _variants(ch: str) -> list[str]:
    """Characters a human reads as `ch` that the scrubber must read as `ch` too."""
    if ch == "-":
        return _DASHES
    if ch == " ":
        return _SPACES
    out = [chr(ord(ch) + 0xFEE0)] if "!" <= ch <= "~" else []  # the full-width form
    if ch.isdigit():
        out += [chr(0x0660 + int(ch)), chr(0x0966 + int(ch))]  # Arabic-Indic and Devanagari digits
    return out + _LOOKALIKES.get(ch, [])


@st.composite
def _disguised(draw, value: str) -> str:
    """`value` with characters swapped for look-alikes and invisible characters inserted."""
    out = []
    for ch in value:
        options = _variants(ch)
        if options and draw(st.booleans()):
            ch = draw(st.sampled_from(options))
        out.append(ch)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(_INVISIBLE)))
    return "".join(out)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries(_PLANTED), data=st.data())
def test_scrub_text_disguised_identifiers_never_survive(scrubber, values, data):
    disguised = {k: data.draw(_disguised(v), label=k) for k, v in values.items()}
    scrubbed, _ = scrubber.scrub_text(_note(disguised))
    # Compared as a reader sees it: the output normalised, numbers digit by digit.
    seen = normalize(scrubbed).text
    for entity_type, value in values.items():
        assert not _survives(value, seen), f"{entity_type} {disguised[entity_type]!r} survived in {scrubbed!r}"
        if len(_digits(value)) >= 5:
            assert _digits(value) not in _digits(seen), f"{entity_type} {disguised[entity_type]!r} in {scrubbed!r}"
    assert not _survives("Springfield", seen) and "62704" not in _digits(seen)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Contact j\u200bohn@ex\u200bample.com today.", "john@example.com"),
        ("Call 555\u2011123\u20114567 now.", "5551234567"),
        ("Call 555\u2013123\u20134567 now.", "5551234567"),
        ("Call ５５５－１２３－４５６７ now.", "5551234567"),
        ("Card 4111\u00a01111\u00a01111\u00a01111 was lost.", "4111111111111111"),
        ("Mail j\u043ehn.sm\u0456th@\u0435x\u0430mple.com please.", "john.smith@example.com"),
        ("Patient: Jo\u200bhn Sm\u200bith was seen.", "Smith"),
        ("SSN 078\u201105\u20111121 and MRN\u00a0\u200b00482913.", "00482913"),
    ],
)
def test_scrub_text_reproductions_of_hidden_identifiers(scrubber, text, hidden):
    scrubbed, counts = scrubber.scrub_text(text)
    seen = normalize(scrubbed).text
    assert counts
    if hidden.isdigit():
        assert hidden not in _digits(seen), scrubbed
    else:
        assert hidden not in seen, scrubbed
        assert hidden[:4].casefold() not in seen.casefold(), scrubbed  # no fragment of it either
    assert scrubber.residual(scrubbed) == []


def test_scrub_text_replaces_the_original_characters_only(scrubber):
    scrubbed, _ = scrubber.scrub_text("Ünïcode stays \u2014 call 555\u2011123\u20114567 or ｍａｉｌ jo@example.org.")
    assert scrubbed == "Ünïcode stays \u2014 call <PHONE_NUMBER> or ｍａｉｌ <EMAIL_ADDRESS>."


def test_scrub_text_em_dash_signs_a_letter_and_separates_digits(scrubber):
    scrubbed, _ = scrubber.scrub_text("Thanks for the update.\n\u2014 Makinde\nCall 617\u2014555\u20140142.")
    assert scrubbed == "Thanks for the update.\n\u2014 <PERSON>\nCall <PHONE_NUMBER>."


def test_pseudonym_is_the_same_for_a_disguised_value(pseudonymizer):
    plain = pseudonymizer.scrub_text("Patient: Amara Okafor.")[0]
    disguised = pseudonymizer.scrub_text("Patient: \u0410mara Ok\u0430\u200bfor.")[0]
    assert plain == disguised


# ---- long records: bounded work, identifiers found across window cuts --------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab \n", max_size=600),
    size=st.integers(40, 120),
    overlap=st.integers(8, 38),
)
def test_windows_cover_the_text_and_hold_everything_short_whole(text, size, overlap):
    spans = windows(text, size, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(0 < b - a <= size for a, b in spans if text)
    assert all(a2 < b1 and a1 < a2 for (a1, b1), (a2, _) in zip(spans, spans[1:], strict=False))
    short = overlap // 2
    for p in range(len(text) - short + 1):
        assert any(a <= p and p + short <= b for a, b in spans), (p, spans)


_FILLER = "the patient was seen and the plan was reviewed with the team today. "


@pytest.mark.parametrize("shift", range(-60, 61, 12))
@pytest.mark.parametrize("separator", [" ", ";"])  # whitespace to cut at, or none at all (a hard cut)
def test_scrub_text_finds_identifiers_straddling_a_window_cut(scrubber, shift, separator):
    filler = _FILLER.replace(" ", separator)
    head = (filler * (WINDOW_CHARS // len(filler) + 2))[: WINDOW_CHARS - 10 + shift]
    text = (
        head + f"{separator}mail:jo.okafor@example.org{separator}call:(617){separator}555-0142{separator}" + filler * 3
    )
    assert len(windows(normalize(text).text)) > 1
    scrubbed, _ = scrubber.scrub_text(text)
    assert "okafor" not in scrubbed and "555-0142" not in scrubbed, scrubbed[WINDOW_CHARS - 200 : WINDOW_CHARS + 200]


def test_scrub_text_removes_a_name_mentioned_windows_apart(scrubber):
    # "Quuxington" alone has no context and is in no name list: only the first mention identifies it.
    text = "Patient: Zorblax Quuxington. " + _FILLER * 600 + "Later Quuxington called back."
    assert len(windows(text)) > 3
    scrubbed, _ = scrubber.scrub_text(text)
    assert "Quuxington" not in scrubbed and scrubbed.endswith("Later <PERSON> called back.")


def _cpu_seconds_to_scrub(scrubber, chars: int) -> float:
    notes = " ".join(n.text.replace("\n", " ") for n in make_clinical_notes(200, seed=5))
    text = (notes * (chars // len(notes) + 1))[:chars]  # one line, dense with identifiers
    start = time.process_time()
    scrubbed, counts = scrubber.scrub_text(text)
    spent = time.process_time() - start
    assert sum(counts.values()) > chars // 200  # it really scrubbed
    return spent


@pytest.mark.parametrize(
    "chars",
    [pytest.param(125_000, id="125k-vs-500k"), pytest.param(2_000_000, id="2M-vs-8M", marks=pytest.mark.slow)],
)
def test_scrub_text_time_is_linear_in_length(scrubber, chars):
    # 4x the text costs ~4x the CPU time when linear (4.6x measured here), 16x when quadratic; 10x leaves room
    # for a noisy machine. CPU time of this process, not wall time, so other processes do not count.
    small, large = _cpu_seconds_to_scrub(scrubber, chars), _cpu_seconds_to_scrub(scrubber, 4 * chars)
    assert large < 10 * small, (small, large)


@pytest.mark.parametrize("unit", ["a.", "1-", "AB12-", "Ab-", "Ab, ", "Ab\n", "Ab. ", "a@", "1 ", "Mr. ", "de "])
def test_scrub_text_hostile_repetition_costs_no_more_than_ordinary_text(scrubber, unit):
    # A regex that rescans a long run from every position inside it is quadratic in the run, bounded only by
    # the window: "AB12-" * n cost 47x ordinary notes in the street-name pattern, "Ab-" * n 78x. The densest
    # capitalised text (a name-like run every 3-4 characters, each checked against its context) costs up to
    # ~14x here, linearly; 25x separates the two.
    chars = 4 * WINDOW_CHARS
    ordinary = _cpu_seconds_to_scrub(scrubber, chars)
    text = (unit * chars)[:chars]
    start = time.process_time()
    scrubber.scrub_text(text)
    hostile = time.process_time() - start
    assert hostile < 25 * ordinary, (hostile, ordinary)


# ---- speed without changing what is found ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="Mm RrNn:#0123456789abAB-\t\n.,", max_size=60))
def test_gated_pattern_finds_what_the_pattern_finds(text):
    from client.recognizers.pattern import _keyword, gated

    for pattern in (
        _keyword(r"MRN|MR|medical\s+record")[0],
        re.compile(r"(?<![\w+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?!\d)"),
        re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b|\b\d{4} ?[A-Z]{2}(?=[ \t]+[A-Z])"),
    ):
        fast = gated(pattern)
        assert fast.pattern != pattern.pattern  # a first-character gate was found
        assert [m.span() for m in fast.finditer(text)] == [m.span() for m in pattern.finditer(text)]


def test_scrubber_detect_matches_presidio_analyze(scrubber):
    text = "Patient: Amara Okafor, MRN 00482913, seen at Sykehuset i Moldevik; call 030 345 582 or (617) 555-0142."
    analyzer = scrubber._analyzer
    fast = sorted((r.entity_type, r.start, r.end, r.score) for r in analyzer.detect(text, 0.5))
    full = sorted(
        (r.entity_type, r.start, r.end, r.score)
        for r in analyzer.analyze(text=text, language="en", score_threshold=0.5)
    )
    assert fast == full
