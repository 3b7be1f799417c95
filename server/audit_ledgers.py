"""The sites' exported ledgers as an auditor holds them, and what their `round` entries say about the
randomness behind every ε they claim.

The ledger's format, reader and verifier live in `common/ledger/`, the code the site writes its ledger
with: one reader of the format, not two that drift apart.

Fresh noise (issue 12): a DP guarantee holds only if the Gaussian noise was drawn fresh. Three
federations once produced bit-identical updates at one site because the noise was reproducible from
the code and the seed; each ledger entry still claimed its ε. From ledger format 2 every `round`
entry records `noise_source` (`"os-seeded"`: a generator seeded from the OS for that round). An entry
without one (format 1), with another value, or whose update sha256 another `round` entry also
records (in any run, in any given ledger) claims an ε that does not hold: `void_epsilon_entries`
finds them, and both `silo audit verify` and the report show them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError

EXPORTED_LEDGER = "ledger.jsonl"
"""The ledger's name inside a `silo ledger export` directory."""

FRESH_NOISE_SOURCES = frozenset({"os-seeded"})
"""The `noise_source` that backs an ε claim (a site also writes "caller-generator", in tests,
and "none" without DP)."""

VOID_EPSILON = "ε claims of these entries are void (noise was not fresh)"


@dataclass(frozen=True)
class LedgerFile:
    """One site's ledger as read from disk: its entries (ε fields as floats) and where it came from."""

    path: Path
    entries: list[dict[str, Any]]

    @property
    def site_id(self) -> str | None:
        return next((e["site_id"] for e in self.entries if e.get("site_id")), None)

    @property
    def public_key_hex(self) -> str | None:
        return self.entries[0].get("site_public_key") if self.entries else None

    @property
    def key_fingerprint(self) -> str | None:
        """sha256 of the raw public key: what the manifest records as `signing_key_fingerprint`."""
        return hashlib.sha256(bytes.fromhex(self.public_key_hex)).hexdigest() if self.public_key_hex else None

    def rounds(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("kind") == "round"]

    def releases(self) -> list[dict[str, Any]]:
        """What the site sent out under a DP claim: trained updates (`round`) and `evaluation` releases."""
        return [e for e in self.entries if e.get("kind") in ("round", "evaluation")]


def ledger_file_path(path: str | Path) -> Path:
    """A ledger JSONL file, or the `ledger.jsonl` inside a `silo ledger export` directory. Neither there
    is the auditor's mistake, not the run's: ConfigError naming the path."""
    p = Path(path)
    file = p / EXPORTED_LEDGER if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"ledger {file} does not exist (pass a `silo ledger export` directory or its ledger.jsonl)")
    return file


@dataclass(frozen=True)
class VoidEntry:
    """A ledger entry whose ε does not hold, and why."""

    site_id: str | None
    ledger: str
    index: int
    run_id: str | None
    round: int | None
    update_sha256: str | None
    reason: str

    def describe(self) -> str:
        where = f"run {self.run_id} round {self.round}"
        return f"site {self.site_id or '?'} entry {self.index} ({where}): {self.reason}"


def void_epsilon_entries(ledgers: Iterable[LedgerFile]) -> list[VoidEntry]:
    """Every `round` or `evaluation` entry that records no fresh noise source, and every `round` entry
    that shares its update sha256 with another `round` entry of any given ledger; in ledger order.
    (Evaluations of one global adapter name the same adapter sha256 at every site: not compared.)"""
    ledgers = list(ledgers)
    holders: dict[str, list[tuple[LedgerFile, dict[str, Any]]]] = defaultdict(list)
    for ledger in ledgers:
        for entry in ledger.rounds():
            holders[str(entry.get("update_sha256"))].append((ledger, entry))
    found = []
    for ledger in ledgers:
        for entry in ledger.releases():
            twins = [] if entry["kind"] != "round" else holders[str(entry.get("update_sha256"))]
            reasons = [_noise_problem(entry), _twin_problem(entry, [(x, e) for x, e in twins if e is not entry])]
            reason = "; ".join(r for r in reasons if r)
            if reason:
                found.append(
                    VoidEntry(
                        site_id=ledger.site_id,
                        ledger=str(ledger.path),
                        index=int(entry.get("index", -1)),
                        run_id=entry.get("run_id"),
                        round=entry.get("round"),
                        update_sha256=entry.get("update_sha256"),
                        reason=reason,
                    )
                )
    return found


def _noise_problem(entry: dict[str, Any]) -> str | None:
    if entry.get("dp_enabled") is False:
        return None  # no noise and ε = inf: nothing is claimed that stale noise could void
    source = entry.get("noise_source")
    if source in FRESH_NOISE_SOURCES:
        return None
    if source is None:
        return f"records no noise source (ledger format {entry.get('format')})"
    return f"noise_source {source!r} is not one drawn fresh for the round"


def _twin_problem(entry: dict[str, Any], twins: list[tuple[LedgerFile, dict[str, Any]]]) -> str | None:
    if not twins:
        return None
    named = ", ".join(f"site {ledger.site_id or '?'} entry {e.get('index')}" for ledger, e in twins[:3])
    more = f" and {len(twins) - 3} more" if len(twins) > 3 else ""
    return f"the same update sha256 {str(entry.get('update_sha256'))[:16]}... as {named}{more}"


def ledger_restarts(ledgers: Iterable[LedgerFile]) -> list[str]:
    """One line per ledger that an operator restarted (`silo ledger restart`): its spend before the
    restart is not in it, so the site's whole budget cannot be audited from it alone."""
    out = []
    for ledger in ledgers:
        for entry in ledger.entries:
            if entry.get("kind") == "restart":
                lost = entry.get("update_sha256") or "unknown"
                out.append(
                    f"the ledger {ledger.path} was restarted at {entry.get('timestamp')} (lost head {lost[:16]}): "
                    "spend recorded before it is not in this ledger; audit the lost ledger (kept beside it as "
                    "`.lost-<time>`) too"
                )
    return out
