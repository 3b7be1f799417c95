"""The coordinator's signed run request: signature, canonical form, and what it covers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import RunRefused
from common.keys import generate_signing_key
from common.run_request import (
    PAYLOAD,
    SIGNATURE,
    check_run_request,
    make_run_request,
    read_run_request,
    verify_run_request,
)

KEY = generate_signing_key()
APP = "a" * 64


def _signed(key=KEY, **over):
    fields = {"run_id": "run-1", "config_hash": "c" * 64, "app_sha256": APP, "rounds": 3, "sites": ["s-a", "s-b"]}
    fields.update(over)
    return make_run_request(key, **fields)


def test_run_request_signed_by_the_coordinator_verifies():
    request, how = verify_run_request(_signed().record(), KEY.public_key())
    assert how == "signed"
    assert (request.run_id, request.rounds, request.sites) == ("run-1", 3, ("s-a", "s-b"))


def test_run_request_unsigned_is_refused_by_a_site_holding_the_key():
    record = _signed(key=None).record()
    assert SIGNATURE not in record
    with pytest.raises(RunRefused, match="unsigned"):
        verify_run_request(record, KEY.public_key())


def test_run_request_signed_by_another_key_is_refused():
    with pytest.raises(RunRefused, match="does not verify"):
        verify_run_request(_signed(key=generate_signing_key()).record(), KEY.public_key())


def test_run_request_without_a_site_key_is_accepted_as_unverified():
    assert verify_run_request(_signed(key=None).record(), None)[1] == "unverified"


def test_run_request_missing_is_refused():
    with pytest.raises(RunRefused, match="no run request"):
        verify_run_request(None, KEY.public_key())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_run_request_any_tampered_byte_is_caught(data):
    record = _signed().record()
    field = data.draw(st.sampled_from([PAYLOAD, SIGNATURE]))
    blob = bytearray(record[field])
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(RunRefused):
        verify_run_request({**record, field: bytes(blob)}, KEY.public_key())


def test_run_request_payload_must_be_canonical():
    record = _signed().record()
    spaced = record[PAYLOAD].replace(b",", b", ")
    with pytest.raises(RunRefused, match="canonical"):
        read_run_request({PAYLOAD: spaced})


@pytest.mark.parametrize(
    ("scope", "match"),
    [
        ({"app_sha256": "b" * 64}, "for app"),
        ({"site_id": "s-z"}, "does not name site"),
        ({"run_id": "run-2"}, "for run 'run-2'"),
        ({"round": 4}, "outside the 3 round"),
        ({"round": 0}, "outside the 3 round"),
    ],
)
def test_run_request_covers_only_its_app_sites_run_and_rounds(scope, match):
    request, _ = verify_run_request(_signed().record(), KEY.public_key())
    args = {"app_sha256": APP, "site_id": "s-a", **scope}
    with pytest.raises(RunRefused, match=match):
        check_run_request(request, **args)


def test_run_request_in_scope_passes_and_evaluate_may_ask_round_0():
    request, _ = verify_run_request(_signed().record(), KEY.public_key())
    check_run_request(request, app_sha256=APP, site_id="s-b", run_id="run-1", round=3)
    check_run_request(request, app_sha256=APP, site_id="s-b", round=0, first=0)
