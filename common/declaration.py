"""What a site declares with each update: the "site" ConfigRecord of its train reply.

    site-id         the site's id (the seal binds it)
    update-sha256   `common.adapter.hash_state` of the adapter the site trained; without secure
                    aggregation the coordinator checks it against the arrays that arrived
    scrub-report    JSON `ScrubReport`: record counts and entity counts by type, never a raw value
    privacy         JSON `PrivacyDeclaration`: the DP event and ε of this round, as the site's ledger says
    secagg          JSON, only with secure aggregation (checked by server/secagg.py)
    seal-payload, seal-signature, signing-public-key   the seal (common/sealing.py), bytes

One definition for the writer (`client.replies.declaration_record`), the coordinator's gate, the manifest
(which stores the parsed scrub report and privacy declaration) and the tests. Parsing a reply raises
`UpdateRejected` naming the field; parsing a manifest raises the manifest reader's error.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import SiloError, UpdateRejected
from common.schema import Fields, number_or_inf

SITE_ID, UPDATE_SHA256, SCRUB_REPORT, PRIVACY, SECAGG = "site-id", "update-sha256", "scrub-report", "privacy", "secagg"
# The seal's fields in the same record; everything else there is a declaration the seal covers.
SEAL_PAYLOAD, SEAL_SIGNATURE, SEAL_PUBLIC_KEY = "seal-payload", "seal-signature", "signing-public-key"
SEAL_FIELDS = (SEAL_PAYLOAD, SEAL_SIGNATURE, SEAL_PUBLIC_KEY)


@dataclass(frozen=True)
class ScrubReport:
    """Counts only: records read, records quarantined, identifiers replaced by entity type."""

    records_in: int
    quarantined: int
    entities: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, obj: Any, *, error: type[SiloError] = UpdateRejected, where: str = "scrub report"
    ) -> ScrubReport:
        f = Fields(obj, where, error)
        records_in, quarantined = f.integer("records_in", minimum=0), f.integer("quarantined", minimum=0)
        entities = f.mapping("entities")
        f.done()
        for name, count in entities.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise error(f"{where}: entity counts must be integers >= 0 (entity type `{_short(name)}`)")
        return cls(records_in=records_in, quarantined=quarantined, entities=dict(entities))

    def to_dict(self) -> dict[str, Any]:
        return {"records_in": self.records_in, "quarantined": self.quarantined, "entities": dict(self.entities)}


def sum_scrub_reports(
    reports: Iterable[Mapping[str, Any]], *, numbers: Sequence[str], tallies: Sequence[str]
) -> dict[str, Any]:
    """Scrub reports added up (a site's two splits, a run's sites, a directory's files): each of `numbers`
    summed, each of `tallies` (entity type or reason -> count) summed per key, in first-seen order. A
    missing field counts as 0 (or no counts)."""
    total: dict[str, Any] = dict.fromkeys(numbers, 0)
    counters: dict[str, Counter[str]] = {name: Counter() for name in tallies}
    for report in reports:
        for name in numbers:
            total[name] += int(report.get(name) or 0)
        for name in tallies:
            counters[name].update(report.get(name) or {})
    return total | {name: dict(counter) for name, counter in counters.items()}


@dataclass(frozen=True)
class PrivacyDeclaration:
    """The round's DP event and ε as the site's ledger recorded them (ε may be inf: DP off)."""

    dp_enabled: bool
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float | None
    delta: float
    accountant: str
    conversion: str | None
    epsilon_round: float
    epsilon_total: float
    budget_epsilon: float
    # sha256 of the site's ledger entry for this round (canonical JSON of the entry).
    ledger_entry_sha256: str | None = None
    # Records in the training split: the largest `num-examples` the site may claim.
    dataset_size: int | None = None
    # Index of the site's ledger entry for this round: the coordinator notices a ledger that restarted.
    ledger_index: int | None = None
    # Where the DP noise came from (e.g. "os-seeded"); informational.
    noise_source: str | None = None
    # A distributed-noise round: its ledger entry's `distributed` object (trust model, t, mechanism, both ε
    # figures; common/ledger/entry.py DISTRIBUTED_FIELDS). None when all the noise was added at the site.
    distributed: dict[str, Any] | None = None

    @classmethod
    def from_dict(
        cls, obj: Any, *, error: type[SiloError] = UpdateRejected, where: str = "privacy declaration"
    ) -> PrivacyDeclaration:
        f = Fields(obj, where, error)
        out = cls(
            dp_enabled=f.flag("dp_enabled"),
            noise_multiplier=f.number("noise_multiplier", minimum=0),
            sample_rate=f.number("sample_rate", minimum=0),
            steps=f.integer("steps", minimum=0),
            max_grad_norm=f.opt_number("max_grad_norm", minimum=0),
            delta=f.number("delta", minimum=0),
            accountant=f.text("accountant"),
            conversion=f.opt_text("conversion"),
            epsilon_round=f.number("epsilon_round", minimum=0, allow_inf=True),
            epsilon_total=f.number("epsilon_total", minimum=0, allow_inf=True),
            budget_epsilon=f.number("budget_epsilon", minimum=0, allow_inf=True),
            ledger_entry_sha256=f.opt_sha256("ledger_entry_sha256"),
            dataset_size=f.opt_integer("dataset_size", minimum=0),
            ledger_index=f.opt_integer("ledger_index", minimum=0),
            noise_source=f.opt_text("noise_source"),
            distributed=f.opt_mapping("distributed"),
        )
        f.done()
        if out.sample_rate > 1:
            raise f.fail("sample_rate", f"must be <= 1, got {out.sample_rate:g}")
        if out.delta >= 1:
            raise f.fail("delta", f"must be < 1, got {out.delta:g}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: infinite ε as "inf"; unset optional fields left out."""
        out: dict[str, Any] = {
            "dp_enabled": self.dp_enabled,
            "noise_multiplier": float(self.noise_multiplier),
            "sample_rate": float(self.sample_rate),
            "steps": int(self.steps),
            "max_grad_norm": None if self.max_grad_norm is None else float(self.max_grad_norm),
            "delta": float(self.delta),
            "accountant": self.accountant,
            "conversion": self.conversion,
            "epsilon_round": number_or_inf(self.epsilon_round),
            "epsilon_total": number_or_inf(self.epsilon_total),
            "budget_epsilon": number_or_inf(self.budget_epsilon),
            "ledger_entry_sha256": self.ledger_entry_sha256,
            "dataset_size": self.dataset_size,
            "ledger_index": self.ledger_index,
            "noise_source": self.noise_source,
            "distributed": self.distributed,
        }
        return {k: v for k, v in out.items() if v is not None or k in ("max_grad_norm", "conversion")}


@dataclass(frozen=True)
class SiteDeclaration:
    """The declarations of one train reply (the seal's fields excluded)."""

    site_id: str
    update_sha256: str
    scrub_report: ScrubReport
    privacy: PrivacyDeclaration
    # Secure aggregation's declaration (clip, quantisation, weight, peers), checked by server/secagg.py.
    secagg: Mapping[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        """The fields as the "site" ConfigRecord carries them (strings; the seal covers them as such)."""
        out = {
            SITE_ID: self.site_id,
            UPDATE_SHA256: self.update_sha256,
            SCRUB_REPORT: _dumps(self.scrub_report.to_dict()),
            PRIVACY: _dumps(self.privacy.to_dict()),
        }
        if self.secagg is not None:
            out[SECAGG] = _dumps(dict(self.secagg))
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SiteDeclaration:
        """Parse a reply's "site" record; `UpdateRejected` names the first bad field."""
        declared = {k: v for k, v in record.items() if k not in SEAL_FIELDS}
        f = Fields(declared, "site declaration", UpdateRejected)
        site_id, update_sha256 = f.text(SITE_ID), f.sha256(UPDATE_SHA256)
        if not site_id:
            raise f.fail(SITE_ID, "is empty")
        scrub = ScrubReport.from_dict(_loads(f, SCRUB_REPORT, required=True))
        privacy = PrivacyDeclaration.from_dict(_loads(f, PRIVACY, required=True))
        secagg = _loads(f, SECAGG, required=False)
        if secagg is not None and not isinstance(secagg, dict):
            raise f.fail(SECAGG, f"must be a JSON object, got {type(secagg).__name__}")
        f.done()
        return cls(site_id=site_id, update_sha256=update_sha256, scrub_report=scrub, privacy=privacy, secagg=secagg)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False)


def _reject_constant(token: str) -> float:
    """Strict JSON: NaN and -Infinity are not numbers; +Infinity (older sites' ε) is read as inf."""
    if token == "Infinity":
        return math.inf
    raise ValueError(f"{token} is not allowed")


def _loads(f: Fields, name: str, *, required: bool) -> Any:
    raw = f.opt_text(name) if not required else f.text(name)
    if raw is None:
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError):
        raise f.fail(name, "is not well-formed JSON") from None


def _short(name: Any) -> str:
    return str(name)[:40]
