"""The seal: round-trips, and any change to what it binds, or to its bytes, is caught."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import UpdateRejected
from common.keys import generate_signing_key
from common.sealing import SealedUpdate, UpdateBinding, metrics_digest, open_sealed, seal_update

KEY = generate_signing_key()
BINDING = {
    "run_id": "run-1",
    "round": 3,
    "site_id": "hospital-a",
    "update_sha256": "a" * 64,
    "global_sha256": "b" * 64,
    "metrics": {"num-examples": 96, "train_loss": 2.5},
    "declarations": {"site-id": "hospital-a", "privacy": '{"epsilon_round": 1.2}'},
}
SEALED = seal_update(KEY, UpdateBinding(**BINDING))


def test_seal_round_trip_returns_the_binding():
    seal = open_sealed(SEALED, KEY.public_key(), UpdateBinding(**BINDING))

    assert (seal.run_id, seal.round, seal.site_id, seal.update_sha256) == ("run-1", 3, "hospital-a", "a" * 64)


def test_seal_metrics_int_and_float_of_equal_value_match():
    # Flower may carry 96 as 96 or 96.0; the seal must not depend on which, but a different value differs.
    as_float = {"num-examples": 96.0, "train_loss": 2.5}
    seal = open_sealed(SEALED, KEY.public_key(), UpdateBinding(**{**BINDING, "metrics": as_float}))

    assert seal.metrics_sha256 == metrics_digest(BINDING["metrics"]) == metrics_digest(as_float)
    assert metrics_digest({**as_float, "num-examples": 96.5}) != seal.metrics_sha256


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("run_id", "run-0", "replayed from another run"),
        ("round", 2, "replayed from another round"),
        ("site_id", "bank-c", "signed for another site"),
        ("update_sha256", "c" * 64, "adapter differs"),
        ("global_sha256", "c" * 64, "another global adapter"),
        ("metrics", {"num-examples": 960, "train_loss": 2.5}, "metrics differ"),
        ("declarations", {"site-id": "hospital-a", "privacy": '{"epsilon_round": 0.1}'}, "declarations differ"),
    ],
)
def test_open_sealed_rejects_each_changed_binding(field, value, reason):
    with pytest.raises(UpdateRejected, match=reason):
        open_sealed(SEALED, KEY.public_key(), UpdateBinding(**{**BINDING, field: value}))


def test_open_sealed_rejects_another_sites_key():
    with pytest.raises(UpdateRejected, match="bad signature"):
        open_sealed(SEALED, generate_signing_key().public_key(), UpdateBinding(**BINDING))


def test_open_sealed_rejects_a_payload_resigned_by_another_key_under_the_right_name():
    forged = seal_update(generate_signing_key(), UpdateBinding(**BINDING))

    with pytest.raises(UpdateRejected, match="bad signature"):
        open_sealed(forged, KEY.public_key(), UpdateBinding(**BINDING))


def _flip(data: bytes, index: int, bit: int) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= 1 << bit
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7), in_payload=st.booleans())
def test_open_sealed_catches_any_flipped_bit(index, bit, in_payload):
    tampered = (
        SealedUpdate(_flip(SEALED.payload, index, bit), SEALED.signature)
        if in_payload
        else SealedUpdate(SEALED.payload, _flip(SEALED.signature, index, bit))
    )

    with pytest.raises(UpdateRejected):
        open_sealed(tampered, KEY.public_key(), UpdateBinding(**BINDING))


@settings(max_examples=50, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(SEALED.payload) - 1))
def test_open_sealed_catches_truncation(cut):
    with pytest.raises(UpdateRejected):
        open_sealed(SealedUpdate(SEALED.payload[:cut], SEALED.signature), KEY.public_key(), UpdateBinding(**BINDING))
