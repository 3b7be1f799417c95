"""`silo audit verify`: check a run directory and the sites' exported ledgers against each other.

An auditor holds the coordinator's run directory, each site's exported ledger and each site's public
key (from the site, not from the ledger). Nothing secret, no records. In order:

1. every round's adapter file hashes to the sha256 the manifest recorded (and `final/` to the last);
2. every ledger is signed by one of the given public keys; its hash chain, signatures and recorded ε
   check out (the site's own verifier, passed in as `check_chain`: see below);
3. every ε a ledger records is recomputed with an INDEPENDENT accountant, Google's `dp-accounting`,
   from the DP events the ledger records, and no total exceeds the site's budget;
4. for every round and site in the manifest, the site's ledger has a `round` entry for that run and
   round with the same update sha256, σ, q, steps, δ and ε: what the coordinator aggregated is what
   the site's budget paid for. A ledger truncated at its tail fails here.
5. every ε a site declared in the manifest is recomputed from its declared (σ, q, steps), so the
   manifest is checked even for a site whose ledger is not given.

`check_chain` is `client.ledger.verify_ledger`, injected by the `silo` command: the coordinator's
package does not import the site's (they run at different institutions), and one verifier of the
ledger format is better than two.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from common import keys
from common.accounting import EpsilonConversion, compute_epsilon, compute_epsilon_dp_accounting
from common.adapter import sha256_file
from common.errors import ConfigError, VerificationFailed
from server.audit import ADAPTER_FILE, LedgerFile, read_ledger_file, read_manifest

INDEPENDENT_REL_TOL = 1e-2
"""Recorded ε (Opacus) vs dp-accounting's, relative. Both implement the same RDP bound of the Poisson
subsampled Gaussian over the same orders; measured here they agree to < 1e-3 relative for ε < 10
(e.g. σ=0.7, q=1/16, 36 steps: 7.6817 vs 7.6890) and to 1e-6 in the usual regime. They drift apart
for large ε or q (small σ): dp-accounting drops fractional orders whose series does not converge, so
its bound is LOOSER (σ=0.5, q=0.25, 1000 steps: 396 vs 898). 1e-2 accepts the first and catches any
edit that matters; the second is handled by `_independent_agrees`."""

SAME_NUMBER_REL_TOL = 1e-9
"""The manifest and the ledger carry the same float through JSON: only float noise is allowed."""

# dp-accounting's RDP for fractional orders logs one warning per order and step size that does not
# converge (hundreds of lines); the outcome is already handled by the tolerance rule below.
_QUIET_LOGGERS = ("absl", "root", "dp_accounting")


class ChainResult(Protocol):
    ok: bool
    entries: int
    first_bad_index: int | None
    reason: str | None


ChainVerifier = Callable[[Path, Any], ChainResult]
"""`(ledger path, Ed25519 public key or None) -> result`; `client.ledger.verify_ledger`."""


@dataclass(frozen=True)
class Check:
    """One verified fact, or the discrepancy found."""

    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def raise_for_failure(self) -> None:
        bad = self.first_failure
        if bad is not None:
            others = sum(not c.ok for c in self.checks) - 1
            more = f" (and {others} more discrepanc{'y' if others == 1 else 'ies'})" if others else ""
            raise VerificationFailed(f"{bad.name}: {bad.detail}{more}")


def verify_run(
    run_dir: str | Path,
    ledger_paths: list[str | Path],
    public_key_paths: list[str | Path],
    *,
    check_chain: ChainVerifier,
) -> VerifyReport:
    """Run every check (collecting, not stopping at, discrepancies); see the module docstring."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    checks = _check_adapters(run_dir, manifest)
    ledgers = [read_ledger_file(p) for p in ledger_paths]
    public_keys = [(Path(p), keys.load_public_key(p)) for p in public_key_paths]
    ok_ledgers: dict[str, LedgerFile] = {}
    for ledger in ledgers:
        ledger_checks = _check_ledger(ledger, public_keys, check_chain)
        checks += ledger_checks
        if all(c.ok for c in ledger_checks) and ledger.site_id:
            if ledger.site_id in ok_ledgers:
                checks.append(Check(f"ledger {ledger.path}", False, f"a second ledger for site {ledger.site_id}"))
            ok_ledgers[ledger.site_id] = ledger
    used = {keys.public_key_raw(k).hex() for _, k in public_keys} & {x.public_key_hex for x in ledgers}
    for path, key in public_keys:
        if keys.public_key_raw(key).hex() not in used:
            checks.append(
                Check(f"public key {path}", False, "signs none of the given ledgers (a site's ledger missing?)")
            )
    checks += _check_manifest_against_ledgers(manifest, ok_ledgers, {x.site_id for x in ledgers})
    return VerifyReport(checks)


# ---- 1. adapters --------------------------------------------------------------------------------


def _check_adapters(run_dir: Path, manifest: dict[str, Any]) -> list[Check]:
    checks = []
    rounds = sorted(manifest.get("rounds", []), key=lambda r: r["round"])
    for r in rounds:
        path = run_dir / "rounds" / str(r["round"]) / ADAPTER_FILE
        checks.append(_hash_check(f"round {r['round']} adapter", path, r.get("adapter_sha256")))
    final = run_dir / "final" / ADAPTER_FILE
    if manifest.get("status") == "completed" and rounds:
        checks.append(_hash_check("final adapter", final, rounds[-1].get("adapter_sha256")))
    listed = {str(r["round"]) for r in rounds}
    extra = sorted(d.name for d in (run_dir / "rounds").glob("*") if d.is_dir() and not d.name.startswith(".")
                   and d.name not in listed) if (run_dir / "rounds").is_dir() else []  # fmt: skip
    if extra:
        checks.append(Check("round directories", False, f"rounds/{', rounds/'.join(extra)} not in the manifest"))
    return checks


def _hash_check(name: str, path: Path, expected: str | None) -> Check:
    if not path.exists():
        return Check(name, False, f"{path} is missing (manifest records sha256 {str(expected)[:16]}...)")
    actual = sha256_file(path)
    if actual != expected:
        return Check(name, False, f"{path} has sha256 {actual[:16]}..., the manifest recorded {str(expected)[:16]}...")
    return Check(name, True, f"sha256 {actual[:16]}... matches the manifest")


# ---- 2 + 3. ledgers -----------------------------------------------------------------------------


def _check_ledger(ledger: LedgerFile, public_keys: list[tuple[Path, Any]], check_chain: ChainVerifier) -> list[Check]:
    name = f"ledger {ledger.path} (site {ledger.site_id or '?'})"
    embedded = ledger.public_key_hex
    if public_keys:
        key = next((k for _, k in public_keys if keys.public_key_raw(k).hex() == embedded), None)
        if key is None:
            return [Check(name, False, "is signed by a key that none of the given --public-key files hold "
                                       "(wrong key, or a ledger re-signed by someone else)")]  # fmt: skip
        authenticity = "against the site's public key"
    else:
        key, authenticity = None, "against the key the ledger names (self-consistency only: pass --public-key)"
    result = check_chain(ledger.path, key)
    if not result.ok:
        return [Check(name, False, f"entry {result.first_bad_index}: {result.reason}")]
    checks = [Check(name, True, f"{result.entries} entries; chain and signatures verified {authenticity}")]
    checks += _check_independent_epsilon(name, ledger.entries)
    return checks


def _check_independent_epsilon(name: str, entries: list[dict[str, Any]]) -> list[Check]:
    """Recompute every entry's ε_round and ε_total from the ledger's events with dp-accounting."""
    events: list[tuple[float, float, int]] = []
    reserved: dict[int, tuple[float, float, int]] = {}
    worst = 0.0
    for entry in entries:
        event = (float(entry["noise_multiplier"]), float(entry["sample_rate"]), int(entry["steps"]))
        if entry["kind"] == "reserve":
            events.append(event)
            reserved[entry["index"]] = event
        else:
            event = reserved.get(entry["reservation"], event)
        for field_name, history in (("epsilon_round", (event,)), ("epsilon_total", tuple(events))):
            recorded = float(entry[field_name])
            problem, rel = _independent_agrees(recorded, history, entry)
            if problem:
                return [Check(name, False, f"entry {entry['index']}: {field_name} {problem}")]
            worst = max(worst, rel)
        budget = float(entry["budget_epsilon"])
        if float(entry["epsilon_total"]) > budget * (1 + INDEPENDENT_REL_TOL):
            return [Check(name, False, f"entry {entry['index']}: epsilon_total {entry['epsilon_total']} exceeds the "
                                       f"site's budget {budget}")]  # fmt: skip
    return [Check(f"{name} ε", True, f"{len(entries)} entries recomputed with dp-accounting; largest relative "
                                     f"difference {worst:.1e}; no total above budget")]  # fmt: skip


def _independent_agrees(
    recorded: float, history: tuple[tuple[float, float, int], ...], entry: dict[str, Any]
) -> tuple[str | None, float]:
    """(None, relative difference) when dp-accounting confirms `recorded`; (why not, _) otherwise.

    RDP: dp-accounting must agree to INDEPENDENT_REL_TOL, or be the looser of the two (its dropped
    fractional orders) while Opacus reproduces the recorded value exactly. PRV: dp-accounting has no
    PRV accountant; a PRV ε is tighter than the RDP bound of the same events, so it must not exceed
    dp-accounting's RDP ε (Balle conversion)."""
    delta = float(entry["delta"])
    accountant = entry["accountant"]
    conversion = EpsilonConversion(entry["epsilon_conversion"] or EpsilonConversion.BALLE2020)
    independent = _dp_accounting_epsilon(history, delta, conversion)
    if math.isinf(independent) or math.isinf(recorded):
        same = math.isinf(independent) and math.isinf(recorded)
        return (None if same else f"recorded {recorded} but dp-accounting recomputes {independent}"), 0.0
    rel = abs(recorded - independent) / max(abs(independent), 1e-12)
    if accountant == "prv":
        if recorded <= independent * (1 + INDEPENDENT_REL_TOL):
            return None, 0.0
        return f"recorded {recorded:.6g} (prv) exceeds no bound: above dp-accounting's RDP bound {independent:.6g}", rel
    if rel <= INDEPENDENT_REL_TOL:
        return None, rel
    opacus = _opacus_epsilon(history, delta, accountant, entry["epsilon_conversion"])
    if recorded < independent and math.isclose(recorded, opacus, rel_tol=SAME_NUMBER_REL_TOL):
        return None, 0.0  # dp-accounting is the looser bound here; Opacus' (recorded) one reproduces
    return f"recorded {recorded:.6g} but dp-accounting recomputes {independent:.6g} (Opacus {opacus:.6g})", rel


@functools.lru_cache(maxsize=1024)
def _dp_accounting_epsilon(
    history: tuple[tuple[float, float, int], ...], delta: float, conversion: EpsilonConversion
) -> float:
    """Cached: a ledger repeats the same composition prefix, and dp-accounting takes up to ~1 s a call."""
    if any(sigma == 0 and q > 0 and n > 0 for sigma, q, n in history):
        return math.inf  # a round without DP
    with _quiet():
        try:
            return compute_epsilon_dp_accounting(list(history), delta=delta, conversion=conversion)
        except ConfigError:
            return math.nan


@functools.lru_cache(maxsize=1024)
def _opacus_epsilon(
    history: tuple[tuple[float, float, int], ...], delta: float, accountant: str, conversion: str | None
) -> float:
    with _quiet():
        return compute_epsilon(
            list(history),
            delta=delta,
            accountant=accountant,  # type: ignore[arg-type]
            conversion=None if conversion is None else EpsilonConversion(conversion),
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    levels = [(logging.getLogger(n), logging.getLogger(n).level) for n in _QUIET_LOGGERS]
    for logger, _ in levels:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in levels:
            logger.setLevel(level)


# ---- 4 + 5. manifest against ledgers ------------------------------------------------------------

_SHARED_FIELDS = (
    ("noise_multiplier", "noise_multiplier"),
    ("sample_rate", "sample_rate"),
    ("steps", "steps"),
    ("delta", "delta"),
    ("epsilon_round", "epsilon_round"),
    ("epsilon_total", "epsilon_total"),
    ("budget_epsilon", "budget_epsilon"),
)
"""(manifest privacy field, ledger field) that must carry the same value."""


def _check_manifest_against_ledgers(
    manifest: dict[str, Any], ledgers: dict[str, LedgerFile], given: set[str | None]
) -> list[Check]:
    checks: list[Check] = []
    run_id = manifest.get("run_id")
    recorded = {site: {e["round"]: e for e in x.entries if e["kind"] == "round" and e.get("run_id") == run_id}
                for site, x in ledgers.items()}  # fmt: skip
    crossed: dict[str, int] = {}
    unchecked: set[str] = set()
    for r in sorted(manifest.get("rounds", []), key=lambda r: r["round"]):
        if r.get("kind") != "train":
            continue
        for s in r.get("sites", []):
            site_id, n = s["site_id"], r["round"]
            name = f"round {n} site {site_id}"
            privacy = s.get("privacy") or {}
            problem = _declared_epsilon_problem(privacy)
            if problem:
                checks.append(Check(name, False, f"the manifest's declared {problem}"))
                continue
            if site_id not in recorded:
                if site_id not in given:
                    unchecked.add(site_id)
                continue  # a given ledger that failed its own checks is reported already
            entry = recorded[site_id].get(n)
            if entry is None:
                checks.append(Check(name, False, f"the manifest aggregated an update (sha256 "
                                                 f"{str(s.get('update_sha256'))[:16]}...) that the site's ledger has "
                                                 "no round entry for (ledger truncated, or not this site's)"))  # fmt: skip
                continue
            if entry["update_sha256"] != s.get("update_sha256"):
                checks.append(Check(name, False, f"update sha256 in the manifest {str(s.get('update_sha256'))[:16]}... "
                                                 f"differs from the ledger's {entry['update_sha256'][:16]}... "
                                                 f"(entry {entry['index']})"))  # fmt: skip
                continue
            mismatch = [f"{m}: manifest {privacy.get(m)!r}, ledger {entry[k]!r}" for m, k in _SHARED_FIELDS
                        if not _same(privacy.get(m), entry[k])]  # fmt: skip
            if mismatch:
                checks.append(Check(name, False, f"the manifest's privacy record differs from ledger entry "
                                                 f"{entry['index']}: {'; '.join(mismatch)}"))  # fmt: skip
                continue
            crossed[site_id] = crossed.get(site_id, 0) + 1
    for site_id, count in sorted(crossed.items()):
        aggregated = len(recorded[site_id])
        extra = aggregated - count
        note = (
            f"; {extra} more round(s) recorded by the site but not aggregated (rejected or late)" if extra > 0 else ""
        )
        checks.append(Check(f"site {site_id}", True, f"{count} aggregated update(s) match the ledger's update "
                                                     f"sha256, DP events and ε{note}"))  # fmt: skip
    for site_id in sorted(unchecked):
        checks.append(Check(f"site {site_id}", True, "no ledger given: only its declared ε was recomputed (the "
                                                     "update hashes were NOT cross-checked)"))  # fmt: skip
    return checks


def _declared_epsilon_problem(privacy: dict[str, Any]) -> str | None:
    """A site's declared epsilon_round, recomputed from its declared event (dp-accounting)."""
    if not privacy or privacy.get("noise_multiplier") is None:
        return None
    event = ((float(privacy["noise_multiplier"]), float(privacy["sample_rate"]), int(privacy["steps"])),)
    raw = privacy.get("epsilon_round")
    if raw is None:
        return "epsilon_round is missing"
    recorded = math.inf if raw in ("inf", "Infinity") else float(raw)
    problem, _ = _independent_agrees(recorded, event, {"delta": privacy["delta"], "accountant": privacy.get("accountant"),
                                                       "epsilon_conversion": privacy.get("conversion")})  # fmt: skip
    return f"epsilon_round {problem}" if problem else None


def _same(a: Any, b: Any) -> bool:
    if a in ("inf", "Infinity"):
        a = math.inf
    if b in ("inf", "Infinity"):
        b = math.inf
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or math.isclose(a, b, rel_tol=SAME_NUMBER_REL_TOL)
    return bool(a == b)
