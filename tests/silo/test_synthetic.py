"""The synthetic site records: exact spans, determinism, variety."""

import pytest

from common.errors import ConfigError
from silo.synthetic import (
    CLINICAL_TEMPLATES,
    ENTITY_TYPES,
    make_bank_messages,
    make_clinical_notes,
    to_span_json,
)


def test_make_clinical_notes_spans_match_text():
    records = make_clinical_notes(200, seed=3) + make_bank_messages(200, seed=3)
    for record in records:
        assert record.spans
        for span in record.spans:
            assert record.text[span.start : span.end] == span.entity_value
            assert span.entity_type in ENTITY_TYPES


def test_make_clinical_notes_is_deterministic_for_a_seed():
    assert make_clinical_notes(30, seed=11) == make_clinical_notes(30, seed=11)
    assert make_clinical_notes(30, seed=11) != make_clinical_notes(30, seed=12)
    assert make_bank_messages(30, seed=11) == make_bank_messages(30, seed=11)


def test_make_clinical_notes_cover_every_type_and_template():
    records = make_clinical_notes(400, seed=0) + make_bank_messages(400, seed=0)
    seen = {span.entity_type for record in records for span in record.spans}
    assert seen == set(ENTITY_TYPES)
    assert len(CLINICAL_TEMPLATES) >= 10
    # Only ages over 89 are identifiers.
    ages = [int(s.entity_value) for r in records for s in r.spans if s.entity_type == "AGE"]
    assert ages and min(ages) > 89


def test_make_clinical_notes_honours_name_locales():
    records = make_clinical_notes(60, seed=2, name_locales=["fi_FI"])
    names = {s.entity_value for r in records for s in r.spans if s.entity_type == "PERSON"}
    assert any(ch in "äöÄÖ" for name in names for ch in name)
    with pytest.raises(ConfigError, match="name_locales"):
        make_clinical_notes(1, seed=0, name_locales=["xx_XX"])


def test_to_span_json_uses_the_span_format():
    record = make_bank_messages(1, seed=5)[0]
    [item] = to_span_json([record])
    assert item["full_text"] == record.text
    first = item["spans"][0]
    assert set(first) == {"entity_type", "entity_value", "start_position", "end_position"}
    assert record.text[first["start_position"] : first["end_position"]] == first["entity_value"]
