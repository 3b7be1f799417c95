"""The site's declaration: one schema for the site that writes it and the coordinator that reads it."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.declaration import PrivacyDeclaration, ScrubReport, SiteDeclaration
from common.errors import UpdateRejected

PRIVACY = PrivacyDeclaration(
    dp_enabled=True,
    noise_multiplier=1.1,
    sample_rate=0.25,
    steps=8,
    max_grad_norm=1.0,
    delta=1e-5,
    accountant="rdp",
    conversion="balle2020",
    epsilon_round=0.7,
    epsilon_total=1.4,
    budget_epsilon=10.0,
    ledger_entry_sha256="cd" * 32,
    dataset_size=120,
    ledger_index=7,
    noise_source="os-seeded",
)
DECLARATION = SiteDeclaration(
    site_id="hospital-a",
    update_sha256="ab" * 32,
    scrub_report=ScrubReport(records_in=150, quarantined=2, entities={"PERSON": 31, "PHONE_NUMBER": 4}),
    privacy=PRIVACY,
)


def test_declaration_round_trips_through_its_record():
    record = DECLARATION.to_record()

    assert set(record) == {"site-id", "update-sha256", "scrub-report", "privacy"}
    assert SiteDeclaration.from_record(record) == DECLARATION


def test_infinite_epsilon_travels_as_strict_json_and_older_sites_infinity_is_read():
    no_dp = PrivacyDeclaration(**{**PRIVACY.__dict__, "dp_enabled": False, "epsilon_round": math.inf})
    record = SiteDeclaration(**{**DECLARATION.__dict__, "privacy": no_dp}).to_record()

    assert json.loads(record["privacy"])["epsilon_round"] == "inf"
    old = record | {"privacy": record["privacy"].replace('"inf"', "Infinity")}
    assert SiteDeclaration.from_record(old).privacy.epsilon_round == math.inf


def test_seal_fields_are_not_declarations_and_the_secagg_declaration_is_kept():
    record = DECLARATION.to_record() | {"seal-payload": b"x", "seal-signature": b"y", "secagg": '{"clip": 1.0}'}

    assert SiteDeclaration.from_record(record).secagg == {"clip": 1.0}


def _privacy(**change) -> dict:
    return DECLARATION.to_record() | {"privacy": json.dumps(PRIVACY.to_dict() | change)}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**DECLARATION.to_record(), "privacy": "{not json"}, "site declaration: `privacy` is not well-formed JSON"),
        ({**DECLARATION.to_record(), "scrub-report": "[1"}, "`scrub-report` is not well-formed JSON"),
        ({**DECLARATION.to_record(), "privacy": '{"epsilon_round": NaN}'}, "`privacy` is not well-formed JSON"),
        ({**DECLARATION.to_record(), "privacy": "[]"}, "privacy declaration must be a JSON object, got list"),
        ({**DECLARATION.to_record(), "site-id": ""}, "`site-id` is empty"),
        ({**DECLARATION.to_record(), "update-sha256": "xyz"}, "`update-sha256` must be 64 lowercase hex digits"),
        ({**DECLARATION.to_record(), "extra": "1"}, "unknown field(s) `extra`"),
        ({k: v for k, v in DECLARATION.to_record().items() if k != "privacy"}, "`privacy` is missing"),
        (_privacy(steps=2.5), "`steps` must be an integer, got float"),
        (_privacy(dataset_size=-1), "`dataset_size` must be >= 0, got -1"),
        (_privacy(ledger_index="7"), "`ledger_index` must be an integer, got str"),
        (_privacy(epsilon_total=-0.1), "`epsilon_total` must be >= 0"),
        (_privacy(sample_rate=1.5), "`sample_rate` must be <= 1"),
        (_privacy(dp_enabled="yes"), "`dp_enabled` must be true or false"),
        (_privacy(surprise=1), "privacy declaration: unknown field(s) `surprise`"),
        (
            {**DECLARATION.to_record(), "scrub-report": '{"records_in": 1, "quarantined": 0, "entities": {"X": -1}}'},
            "entity counts must be integers >= 0",
        ),
    ],
)
def test_a_malformed_declaration_is_one_clear_rejection(record, message):
    with pytest.raises(UpdateRejected) as err:
        SiteDeclaration.from_record(record)
    assert message in str(err.value)


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=30), st.binary(max_size=8)), max_size=6))
def test_any_record_parses_or_is_rejected_never_raises_otherwise(record):
    with contextlib.suppress(UpdateRejected):
        SiteDeclaration.from_record(record)
