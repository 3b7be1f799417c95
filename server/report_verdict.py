"""The first line of every audit report: whether what follows was verified, when, and with what.

A report shows what the run directory and the ledgers say; only `server.audit_verify` checks it.
The verdict names the outcome of that check for the report's reader, before any figure:

    Verified 2026-11-27 14:03 UTC: 41 checks passed with 2 site key(s) (fingerprints ab12.., cd34..) and 2 ledger(s) ...
    NOT VERIFIED 2026-11-27 14:03 UTC: FAILED: <the first discrepancy> (and 2 more)
    NOT VERIFIED 2026-11-27 14:03 UTC: incomplete: <what could not be checked>
    NOT VERIFIED: no site public keys were given; the figures are as the coordinator and the ledgers record them
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from common import keys
from server.audit_verify import VerifyReport

Status = Literal["verified", "failed", "incomplete", "not verified"]
# Characters of a key's sha256 shown in the verdict line (the JSON twin keeps them whole).
SHORT_HASH = 12


@dataclass(frozen=True)
class Verdict:
    status: Status
    at: str | None  # when the checks ran (UTC), None when none ran
    keys: tuple[tuple[str, str], ...] = ()  # (path, fingerprint) per site key used, as `silo ledger export` prints it
    ledgers: tuple[str, ...] = ()
    checks: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def line(self) -> str:
        if self.status == "not verified":
            return f"NOT VERIFIED: {self.detail}"
        if self.status == "verified":
            keys = ", ".join(h[:SHORT_HASH] for _, h in self.keys)
            return (
                f"Verified {self.at}: {self.checks} checks passed with {len(self.keys)} site key(s) (fingerprints {keys}) "
                f"and {len(self.ledgers)} ledger(s) ({', '.join(self.ledgers)}); every ε recomputed from the ledgers"
            )
        return f"NOT VERIFIED {self.at}: {self.status}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "line": self.line(),
            "at": self.at,
            "keys": [{"path": p, "fingerprint": h} for p, h in self.keys],
            "ledgers": list(self.ledgers),
            "checks": self.checks,
            "detail": self.detail,
        }


def not_verified(reason: str) -> Verdict:
    return Verdict(status="not verified", at=None, detail=reason)


def verdict_of(result: VerifyReport, *, public_keys: list[Path], ledgers: list[Path]) -> Verdict:
    """The verdict of a finished `verify_run` over these keys and ledgers."""
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    fingerprints = tuple((str(p), keys.fingerprint(keys.load_public_key(p))) for p in public_keys)
    verified = Verdict("verified", at, fingerprints, tuple(str(p) for p in ledgers), len(result.checks))
    failed = [c for c in result.checks if not c.ok]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return replace(verified, status="failed", detail=f"{failed[0].name}: {failed[0].detail}{more}")
    if result.unchecked:
        return replace(verified, status="incomplete", detail="not checked: " + "; ".join(result.unchecked))
    return verified
