"""The run manifest (`<run-dir>/manifest.json`): one definition for its writer (server/checkpoint.py),
its readers (resume, `silo audit`) and the tests.

    Manifest      run id, status, config and its hash, code version, base model, sites, rounds
    RoundEntry    one completed round: the global adapter's sha256, what was aggregated and how
    SiteEntry     one accepted update: who, how many examples, the hashes and norm the coordinator
                  computed, the site's declarations (scrub counts, privacy), its metrics, warnings
    Rejection     one reply that was not aggregated, with its reason
    LedgerRegression  a site whose privacy-ledger index went backwards (its ledger was replaced)

`read_manifest(path)` is the reader: a run directory or its manifest.json in, a `Manifest` out, or one
`ManifestError` line naming the file and field. `Manifest.from_dict` / `to_dict` convert in memory.

Schema 2 keeps a site's metrics under `metrics`; schema 1 (older runs) had them beside the other
fields, and is read by taking every unknown numeric field of a site entry as a metric.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.declaration import PrivacyDeclaration, ScrubReport
from common.errors import ConfigError
from common.schema import Fields, without_none

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)


class ManifestError(ConfigError):
    """The run manifest is missing, not JSON, or not of this schema: the message names file and field."""


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str
    site_id: str | None = None

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> Rejection:
        f = Fields(obj, where, ManifestError)
        out = cls(node_id=f.integer("node_id"), reason=f.text("reason"), site_id=f.opt_text("site_id"))
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return without_none({"node_id": self.node_id, "site_id": self.site_id, "reason": self.reason})


@dataclass(frozen=True)
class LedgerRegression:
    """A site's ledger index not above one the coordinator saw before: its ledger was deleted or
    replaced, which resets the budget it enforces. From `<runs>/ledger_heads.json` (server/ledger_heads.py)."""

    site_id: str
    ledger_index: int
    previous_ledger_index: int
    previous_run_id: str
    previous_round: int

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> LedgerRegression:
        f = Fields(obj, where, ManifestError)
        out = cls(
            site_id=f.text("site_id"),
            ledger_index=f.integer("ledger_index"),
            previous_ledger_index=f.integer("previous_ledger_index"),
            previous_run_id=f.text("previous_run_id"),
            previous_round=f.integer("previous_round"),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "ledger_index": self.ledger_index,
            "previous_ledger_index": self.previous_ledger_index,
            "previous_run_id": self.previous_run_id,
            "previous_round": self.previous_round,
        }

    def message(self) -> str:
        return (
            f"site {self.site_id!r}: privacy ledger index {self.ledger_index} is not above "
            f"{self.previous_ledger_index}, seen in run {self.previous_run_id} round {self.previous_round}: "
            "its ledger was deleted or replaced, which resets the budget it enforces"
        )


@dataclass(frozen=True)
class SiteEntry:
    """One aggregated update. `update_sha256` is the hash the coordinator computed of the arrays it
    received (equal to the site's declared one, which the gate checks); with secure aggregation the
    coordinator receives a masked vector (`masked_sha256`) and `update_sha256` is the site's declared
    hash of the adapter it trained, which only the site's ledger can confirm."""

    node_id: int
    site_id: str
    num_examples: int
    update_sha256: str | None = None
    masked_sha256: str | None = None
    bytes_up: int | None = None
    update_norm: float | None = None
    signing_key_fingerprint: str | None = None
    scrub: ScrubReport | None = None
    privacy: PrivacyDeclaration | None = None
    secagg: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, obj: Any, where: str, *, schema: int = SCHEMA_VERSION) -> SiteEntry:
        f = Fields(obj, where, ManifestError)
        scrub, privacy = f.opt_mapping("scrub"), f.opt_mapping("privacy")
        entry = cls(
            node_id=f.integer("node_id"),
            site_id=f.text("site_id"),
            num_examples=f.integer("num_examples"),
            update_sha256=f.opt_text("update_sha256"),
            masked_sha256=f.opt_sha256("masked_sha256"),
            bytes_up=f.opt_integer("bytes_up", minimum=0),
            update_norm=f.opt_number("update_norm", minimum=0),
            signing_key_fingerprint=f.opt_text("signing_key_fingerprint"),
            scrub=None if scrub is None else ScrubReport.from_dict(scrub, error=ManifestError, where=f"{where} scrub"),
            privacy=None
            if privacy is None
            else PrivacyDeclaration.from_dict(privacy, error=ManifestError, where=f"{where} privacy"),
            secagg=f.opt_mapping("secagg"),
            warnings=tuple(str(w) for w in f.items("warnings")),
        )
        metrics = f.opt_mapping("metrics") or {}
        if schema < 2:
            metrics.update(f.rest())
        f.done()
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ManifestError(f"{where}: metric `{name}` must be a number, got {type(value).__name__}")
        return replace(entry, metrics={str(k): float(v) for k, v in metrics.items()})

    def to_dict(self) -> dict[str, Any]:
        return without_none(
            {
                "node_id": self.node_id,
                "site_id": self.site_id,
                "num_examples": self.num_examples,
                "update_sha256": self.update_sha256,
                "masked_sha256": self.masked_sha256,
                "bytes_up": self.bytes_up,
                "update_norm": self.update_norm,
                "signing_key_fingerprint": self.signing_key_fingerprint,
                "scrub": None if self.scrub is None else self.scrub.to_dict(),
                "privacy": None if self.privacy is None else self.privacy.to_dict(),
                "secagg": None if self.secagg is None else dict(self.secagg),
                "metrics": dict(self.metrics),
                "warnings": list(self.warnings) or None,
            }
        )


@dataclass(frozen=True)
class FailedRound:
    """The round a failed run stopped in, with every reply it rejected: the run's manifest has no round
    entry for it (nothing was aggregated), so without this an auditor would count its rejections as 0."""

    round: int
    rejected: tuple[Rejection, ...] = ()

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> FailedRound:
        f = Fields(obj, where, ManifestError)
        out = cls(
            round=f.integer("round", minimum=0),
            rejected=tuple(Rejection.from_dict(r, f"{where} rejected {i}") for i, r in enumerate(f.items("rejected"))),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "rejected": [r.to_dict() for r in self.rejected]}


# A round entry's plain sub-records: what each holds is written by one function of server/federation.py.
_ROUND_OBJECTS = ("security", "train", "eval", "secagg", "central_dp", "timings", "transport")
_ROUND_NUMBERS = ("round_seconds", "slowest_site_train_seconds")


@dataclass(frozen=True)
class RoundEntry:
    round: int
    adapter_sha256: str
    completed_at: str
    kind: str | None = None  # "initial" (round 0) or "train"
    strategy: str | None = None
    sites: tuple[SiteEntry, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    ledger_regressions: tuple[LedgerRegression, ...] = ()
    bytes_down_per_site: int | None = None
    # security, train, eval, secagg, central_dp, timings (where the round's time went), transport (wire
    # encoding and bytes): JSON objects; round_seconds, slowest_site_train_seconds.
    records: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str, *, schema: int = SCHEMA_VERSION) -> RoundEntry:
        f = Fields(obj, where, ManifestError)
        n = f.integer("round", minimum=0)
        out = cls(
            round=n,
            adapter_sha256=f.sha256("adapter_sha256"),
            completed_at=f.text("completed_at"),
            kind=f.opt_text("kind"),
            strategy=f.opt_text("strategy"),
            sites=tuple(
                SiteEntry.from_dict(s, f"{where} site {i}", schema=schema) for i, s in enumerate(f.items("sites"))
            ),
            rejected=tuple(Rejection.from_dict(r, f"{where} rejected {i}") for i, r in enumerate(f.items("rejected"))),
            ledger_regressions=tuple(
                LedgerRegression.from_dict(r, f"{where} ledger_regressions {i}")
                for i, r in enumerate(f.items("ledger_regressions"))
            ),
            bytes_down_per_site=f.opt_integer("bytes_down_per_site", minimum=0),
            records=without_none(
                {
                    **{k: f.opt_mapping(k) for k in _ROUND_OBJECTS},
                    **{k: f.opt_number(k, minimum=0) for k in _ROUND_NUMBERS},
                }
            ),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return without_none(
            {
                "round": self.round,
                "adapter_sha256": self.adapter_sha256,
                "completed_at": self.completed_at,
                "kind": self.kind,
                "strategy": self.strategy,
                "sites": [s.to_dict() for s in self.sites] if self.sites or self.kind == "train" else None,
                "rejected": [r.to_dict() for r in self.rejected] if self.rejected or self.kind == "train" else None,
                "ledger_regressions": [r.to_dict() for r in self.ledger_regressions] or None,
                "bytes_down_per_site": self.bytes_down_per_site,
                **{k: self.records.get(k) for k in (*_ROUND_OBJECTS, *_ROUND_NUMBERS)},
            }
        )


@dataclass(frozen=True)
class Manifest:
    run_id: str
    created: str
    status: str  # "running", "completed" or "failed"
    code_version: str
    config_hash: str
    base_model: str
    rounds_planned: int
    completed_rounds: int  # -1 before round 0 (the initial adapter) is saved
    config: Mapping[str, Any] = field(default_factory=dict)
    sites: Mapping[str, str] = field(default_factory=dict)  # node id -> site id
    rounds: tuple[RoundEntry, ...] = ()
    at_rest: Mapping[str, Any] | None = None
    resumes: tuple[Mapping[str, Any], ...] = ()
    finished: str | None = None
    failure: str | None = None
    failed_round: FailedRound | None = None
    # sha256 of the base model's weights, config and tokenizer (common/model_pin.py); older runs have none.
    base_model_sha256: str | None = None
    # Flower's id of each submission of this run (a resumed run has several), as `flwr ls` shows it.
    flower_run_ids: tuple[int, ...] = ()
    schema: int = SCHEMA_VERSION

    @property
    def ledger_regressions(self) -> list[tuple[int, LedgerRegression]]:
        """Every (round, regression) of the run, in round order."""
        return [(r.round, g) for r in sorted(self.rounds, key=lambda r: r.round) for g in r.ledger_regressions]

    def round(self, n: int) -> RoundEntry | None:
        return next((r for r in self.rounds if r.round == n), None)

    @classmethod
    def from_dict(cls, obj: Any, where: str = MANIFEST) -> Manifest:
        f = Fields(obj, where, ManifestError)
        schema = f.integer("schema")
        if schema not in READABLE_SCHEMAS:
            raise f.fail("schema", f"is {schema}; this version reads {', '.join(map(str, READABLE_SCHEMAS))}")
        sites = f.mapping("sites")
        failed = f.opt_mapping("failed_round")
        if not all(isinstance(v, str) for v in sites.values()):
            raise f.fail("sites", "must map node ids to site id strings")
        out = cls(
            schema=schema,
            run_id=f.text("run_id"),
            created=f.text("created"),
            status=f.text("status"),
            code_version=f.text("code_version"),
            config_hash=f.text("config_hash"),
            base_model=f.text("base_model"),
            rounds_planned=f.integer("rounds_planned", minimum=0),
            completed_rounds=f.integer("completed_rounds", minimum=-1),
            config=f.mapping("config"),
            sites={str(k): v for k, v in sites.items()},
            rounds=tuple(
                RoundEntry.from_dict(r, f"{where}: rounds[{i}]", schema=schema) for i, r in enumerate(f.items("rounds"))
            ),
            at_rest=f.opt_mapping("at_rest"),
            resumes=tuple(_object(r, f"{where}: resumes[{i}]") for i, r in enumerate(f.items("resumes"))),
            finished=f.opt_text("finished"),
            failure=f.opt_text("failure"),
            failed_round=None if failed is None else FailedRound.from_dict(failed, f"{where}: failed_round"),
            base_model_sha256=f.opt_sha256("base_model_sha256"),
            flower_run_ids=tuple(_flower_run_id(v, f"{where}: flower_run_ids") for v in f.items("flower_run_ids")),
        )
        f.done()
        return out

    def to_dict(self) -> dict[str, Any]:
        return without_none(
            {
                "schema": SCHEMA_VERSION,
                "run_id": self.run_id,
                "created": self.created,
                "status": self.status,
                "code_version": self.code_version,
                "config_hash": self.config_hash,
                "config": dict(self.config),
                "base_model": self.base_model,
                "rounds_planned": self.rounds_planned,
                "completed_rounds": self.completed_rounds,
                "sites": dict(self.sites),
                "rounds": [r.to_dict() for r in self.rounds],
                "at_rest": None if self.at_rest is None else dict(self.at_rest),
                "resumes": [dict(r) for r in self.resumes] or None,
                "finished": self.finished,
                "failure": self.failure,
                "failed_round": None if self.failed_round is None else self.failed_round.to_dict(),
                "base_model_sha256": self.base_model_sha256,
                "flower_run_ids": list(self.flower_run_ids) or None,
            }
        )


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of a run directory (or the manifest file itself), checked against this schema."""
    p = Path(path)
    file = p / MANIFEST if p.is_dir() else p
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{file}: no run manifest here (is {p} a run directory?)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{file}: cannot read the run manifest: {err}") from None
    return parse_manifest(text, str(file))


def parse_manifest(text: str, where: str = MANIFEST) -> Manifest:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ManifestError(f"{where}: unreadable manifest, not JSON ({err})") from None
    return Manifest.from_dict(raw, where)


def _flower_run_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(f"{where}: each must be a non-negative integer, got {value!r}")
    return value


def _object(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ManifestError(f"{where} must be a JSON object, got {type(obj).__name__}")
    return dict(obj)


def site_entries(manifest: Manifest) -> Sequence[tuple[int, SiteEntry]]:
    """Every (round, aggregated site entry) of the run, in round order."""
    return [(r.round, s) for r in sorted(manifest.rounds, key=lambda r: r.round) for s in r.sites]
