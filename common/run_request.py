"""The coordinator's signed run request: what a site agrees to before it trains or spends anything.

The coordinator's ServerApp signs, once per Flower run, a canonical JSON statement with the
coordinator's Ed25519 key (`silo keys` writes it beside the registry; each site's kit holds its
public half):

    run_id          the Silo run id (the ledger's run key; a resumed run keeps it)
    config_hash     sha256 of the federation config
    app_sha256      sha256 of the Flower app bundle (FAB) the run executes
    rounds          the number of training rounds the coordinator plans
    sites           the site ids the coordinator expects (its registry), or null without one
    base_model_sha256  the fingerprint of the base model the coordinator started from
                    (common/model_pin.py); each site refuses the handshake when its own differs

It travels with the round-0 handshake and with every train and evaluate message. The site checks
it against the coordinator key in its kit, against the FAB the run really carries, and against the
run id and round of the message, before anything else (client/runtime/site_runtime.py). Pure: no
process, no network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import RunRefused
from common.keys import fingerprint, sign, verify
from common.sealing import canonical_json

REQUEST_VERSION = 2
"""Bumped when the statement's fields change; a site refuses versions it does not know."""
# Name of the message record that carries the request, and of its two fields.
RECORD = "silo-run-request"
PAYLOAD, SIGNATURE = "payload", "signature"
# The round-0 handshake: a query each site answers with its signature over the request's digest.
HANDSHAKE_ACTION = "silo_handshake"
HANDSHAKE_MESSAGE_TYPE = f"query.{HANDSHAKE_ACTION}"


@dataclass(frozen=True)
class RunRequest:
    """The signed statement. Field names are the payload's JSON keys."""

    run_id: str
    config_hash: str
    app_sha256: str
    rounds: int
    sites: tuple[str, ...] | None
    base_model_sha256: str | None = None
    version: int = REQUEST_VERSION

    def payload(self) -> bytes:
        raw = asdict(self)
        raw["sites"] = list(self.sites) if self.sites is not None else None
        return canonical_json(raw)

    def digest(self) -> str:
        """sha256 of the payload: what the site's handshake reply signs."""
        return hashlib.sha256(self.payload()).hexdigest()


@dataclass(frozen=True)
class SignedRunRequest:
    request: RunRequest
    signature: bytes | None  # None: the coordinator has no signing key (sites with one refuse it)

    def record(self) -> dict[str, Any]:
        """The fields of the message's `silo-run-request` record."""
        out: dict[str, Any] = {PAYLOAD: self.request.payload()}
        if self.signature is not None:
            out[SIGNATURE] = self.signature
        return out


def make_run_request(
    key: Ed25519PrivateKey | None,
    *,
    run_id: str,
    config_hash: str,
    app_sha256: str,
    rounds: int,
    sites: Sequence[str] | None,
    base_model_sha256: str | None = None,
) -> SignedRunRequest:
    request = RunRequest(
        run_id=str(run_id),
        config_hash=str(config_hash),
        app_sha256=str(app_sha256),
        rounds=int(rounds),
        sites=tuple(sorted(sites)) if sites is not None else None,
        base_model_sha256=base_model_sha256,
    )
    return SignedRunRequest(request, sign(key, request.payload()) if key is not None else None)


def read_run_request(record: Mapping[str, Any] | None) -> tuple[RunRequest, bytes | None]:
    """Parse the record without trusting it. RunRefused when it is missing or malformed."""
    if record is None:
        raise RunRefused("the message carries no run request from the coordinator")
    payload, signature = record.get(PAYLOAD), record.get(SIGNATURE)
    if not isinstance(payload, bytes) or (signature is not None and not isinstance(signature, bytes)):
        raise RunRefused("the run request's payload and signature must be bytes")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RunRefused("the run request is not JSON") from None
    if not isinstance(raw, dict) or raw.get("version") != REQUEST_VERSION:
        raise RunRefused(f"the run request has an unknown version (this site reads {REQUEST_VERSION})")
    expected = set(RunRequest.__dataclass_fields__)
    if set(raw) != expected:
        raise RunRefused(f"the run request's fields differ: {sorted(set(raw) ^ expected)}")
    sites = raw["sites"]
    ok = (
        all(isinstance(raw[k], str) for k in ("run_id", "config_hash", "app_sha256"))
        and isinstance(raw["rounds"], int)
        and (sites is None or (isinstance(sites, list) and all(isinstance(s, str) for s in sites)))
        and (raw["base_model_sha256"] is None or isinstance(raw["base_model_sha256"], str))
    )
    if not ok:
        raise RunRefused("the run request's fields have the wrong types")
    request = RunRequest(**{**raw, "sites": tuple(sites) if sites is not None else None})
    if request.payload() != payload:
        raise RunRefused("the run request is not in canonical form")
    return request, signature


def verify_run_request(
    record: Mapping[str, Any] | None, coordinator_key: Ed25519PublicKey | None
) -> tuple[RunRequest, str]:
    """The request and how it was established: "signed" (by `coordinator_key`), or "unverified" when
    the site holds no coordinator key (test setups only). RunRefused when unsigned or forged."""
    request, signature = read_run_request(record)
    if coordinator_key is None:
        return request, "unverified"
    if signature is None:
        raise RunRefused("the run request is unsigned, and this site accepts only runs its coordinator signed")
    if not verify(coordinator_key, request.payload(), signature):
        raise RunRefused(
            "the run request's signature does not verify against this site's coordinator key "
            f"({fingerprint(coordinator_key)[:12]}): forged, or signed by another coordinator"
        )
    return request, "signed"


def check_run_request(
    request: RunRequest,
    *,
    app_sha256: str,
    site_id: str | None,
    run_id: str | None = None,
    round: int | None = None,
    first: int = 1,
) -> None:
    """That the (verified) request covers this app, this site, and this message's run and round
    (None: not checked)."""
    if request.app_sha256 != app_sha256:
        raise RunRefused(
            f"the run request is for app {request.app_sha256[:12]}, but this run carries app {app_sha256[:12]}"
        )
    if site_id is not None and request.sites is not None and site_id not in request.sites:
        raise RunRefused(f"the run request does not name site {site_id!r}")
    if run_id is not None and run_id != request.run_id:
        raise RunRefused(f"the message is for run {run_id!r}, the signed request for run {request.run_id!r}")
    if round is not None and not first <= round <= request.rounds:
        raise RunRefused(f"round {round} is outside the {request.rounds} round(s) of the signed run request")
