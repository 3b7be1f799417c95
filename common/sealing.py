"""A site's signature over its update: what it sends, for which run and round, from which site.

The seal is a canonical JSON payload signed with the site's Ed25519 key (the key that signs its
privacy ledger). It binds

    run_id, round            replay from another run or round fails
    site_id, key fingerprint the update cannot be passed off as another site's
    update_sha256            `common.adapter.hash_state` of the adapter sent
    global_sha256            the same hash of the global adapter the site trained from
    metrics_sha256           the metrics the site reports with the update
    declarations_sha256      the site's declarations (scrub counts, privacy spent)

`open_sealed` recomputes every binding from what actually arrived and checks the signature; any
mismatch raises `UpdateRejected` naming what differed. Pure: no process, no network.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import UpdateRejected
from common.keys import fingerprint, sign, verify

SEAL_VERSION = 1
"""Bumped when the payload's fields change; a coordinator refuses versions it does not know."""


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, no NaN (json would write a non-JSON token)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def metrics_digest(metrics: Mapping[str, Any]) -> str:
    """sha256 of the metrics as floats; ints and floats of equal value hash alike, as they travel."""
    plain = {}
    for key, value in metrics.items():
        number = float(value)
        # A non-finite metric cannot be sealed canonically; its repr stands in for it.
        plain[str(key)] = number if math.isfinite(number) else repr(number)
    return hashlib.sha256(canonical_json(plain)).hexdigest()


def declarations_digest(declarations: Mapping[str, str]) -> str:
    return hashlib.sha256(canonical_json({str(k): str(v) for k, v in declarations.items()})).hexdigest()


@dataclass(frozen=True)
class Seal:
    """The signed statement. Field names are the payload's JSON keys."""

    seal: int
    run_id: str
    round: int
    site_id: str
    key_fingerprint: str
    update_sha256: str
    global_sha256: str
    metrics_sha256: str
    declarations_sha256: str


@dataclass(frozen=True)
class SealedUpdate:
    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class UpdateBinding:
    """What a seal binds an update to; the receiver recomputes each field from what arrived."""

    run_id: str
    round: int
    site_id: str
    update_sha256: str
    global_sha256: str
    metrics: Mapping[str, Any]
    declarations: Mapping[str, str]


def seal_update(key: Ed25519PrivateKey, binding: UpdateBinding) -> SealedUpdate:
    """Sign what the site is about to send. Raises (and the site sends nothing) when it cannot."""
    seal = Seal(
        seal=SEAL_VERSION,
        run_id=str(binding.run_id),
        round=int(binding.round),
        site_id=str(binding.site_id),
        key_fingerprint=fingerprint(key),
        update_sha256=binding.update_sha256,
        global_sha256=binding.global_sha256,
        metrics_sha256=metrics_digest(binding.metrics),
        declarations_sha256=declarations_digest(binding.declarations),
    )
    payload = canonical_json(asdict(seal))
    return SealedUpdate(payload=payload, signature=sign(key, payload))


def read_seal(payload: bytes) -> Seal:
    """Parse a payload without trusting it (to find which key should have signed it)."""
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UpdateRejected(f"seal payload is not JSON: {err}") from None
    if not isinstance(raw, dict) or raw.get("seal") != SEAL_VERSION:
        raise UpdateRejected(
            f"seal payload has an unknown version: {raw.get('seal') if isinstance(raw, dict) else raw!r}"
        )
    expected = set(Seal.__dataclass_fields__)
    if set(raw) != expected:
        raise UpdateRejected(f"seal payload fields differ: {sorted(set(raw) ^ expected)}")
    try:
        return Seal(**raw)
    except TypeError as err:
        raise UpdateRejected(f"seal payload is malformed: {err}") from None


def open_sealed(sealed: SealedUpdate, public_key: Ed25519PublicKey, binding: UpdateBinding) -> Seal:
    """Check the signature with `public_key`, then that the seal binds exactly what arrived.

    `binding` is recomputed by the receiver from the message, never taken from the seal."""
    b = binding
    if not verify(public_key, sealed.payload, sealed.signature):
        raise UpdateRejected(f"bad signature: the update is not signed by the key of site {b.site_id!r}")
    seal = read_seal(sealed.payload)
    checks = (
        ("run_id", seal.run_id, str(b.run_id), "replayed from another run"),
        ("round", seal.round, int(b.round), "replayed from another round"),
        ("site_id", seal.site_id, str(b.site_id), "signed for another site"),
        ("key_fingerprint", seal.key_fingerprint, fingerprint(public_key), "signed with another key"),
        ("update_sha256", seal.update_sha256, b.update_sha256, "adapter differs from the one signed"),
        ("global_sha256", seal.global_sha256, b.global_sha256, "trained from another global adapter"),
        ("metrics_sha256", seal.metrics_sha256, metrics_digest(b.metrics), "metrics differ from those signed"),
        (
            "declarations_sha256",
            seal.declarations_sha256,
            declarations_digest(b.declarations),
            "declarations differ from those signed",
        ),
    )
    for name, signed, actual, meaning in checks:
        if signed != actual:
            raise UpdateRejected(f"{meaning}: seal {name} is {_short(signed)}, the update's is {_short(actual)}")
    return seal


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 else repr(value)
