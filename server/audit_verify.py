"""`silo audit verify`: check a run directory and the sites' exported ledgers against each other.

An auditor holds the coordinator's run directory, each site's exported ledger and each site's public
key (from the site, not from the ledger). Nothing secret, no records. Nothing the manifest says is
taken on trust:

1. the manifest reads as one (`server.audit_manifest`), its rounds run 0..completed_rounds without
   gaps (round 0 the initial adapter, every later one a training round that aggregated at least
   `min_sites` sites), a "completed" run has all its planned rounds, and its site table names every
   site it aggregated;
2. every round's adapter file, and `final/`, hash to the sha256 the manifest recorded; no round
   directory is missing from the manifest;
3. every ledger is signed by one of the given public keys; its hash chain, signatures and recorded ε
   check out (the site's own verifier); every ε it records is recomputed with an INDEPENDENT
   accountant (`server.audit_epsilon`) from the DP events it records, and no total exceeds the budget;
4. every `round` entry of every given ledger drew fresh noise (`server.audit_ledgers`): an entry
   without a fresh noise source, or sharing its update sha256 with another, has a void ε;
5. for every training round and site in the manifest, the site's ledger has a `round` entry for that
   run and round with the same update sha256, σ, q, steps, δ and ε, signed by the key that signed
   the update; and every `round` entry the ledgers record for this run is a training round of the
   manifest (a site may have trained a round whose update was rejected or came late);
6. a site whose ledger is not given still has its declared ε recomputed from its declared events.

Every check that fails is a discrepancy (exit 9). What could not be checked (a site that took part
without its ledger, a ledger without its site's public key, an adapter encrypted at rest) is listed
as unchecked: the audit is incomplete (exit 10) unless the auditor accepts the gaps (`--partial`).
A file the auditor names that is not there (the run directory, a ledger, a public key) is the
auditor's mistake, not the run's: `ConfigError` (exit 2), so a script can tell a typo from tampering.

One concept over ~400 lines: the auditor's verification, checks 1 to 6 in this order, top to bottom.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import encryption, keys
from common.accounting import Accountant, EpsilonConversion
from common.adapter import sha256_file
from common.errors import AuditIncomplete, SiloError, VerificationFailed
from common.ledger.verify import read_ledger, verify_ledger
from common.manifest import MANIFEST, Manifest, ManifestError, RoundEntry, SiteEntry, read_manifest
from common.schema import decode_epsilon
from server.audit_epsilon import (
    SAME_NUMBER_REL_TOL,
    declared_epsilon_problem,
    declared_total_problem,
    ledger_epsilon_problem,
)
from server.audit_ledgers import VOID_EPSILON, LedgerFile, ledger_file_path, ledger_restarts, void_epsilon_entries

ADAPTER_FILE = "adapter_model.safetensors"
"""server.checkpoint.ADAPTER_FILE: the file each round's sha256 covers."""

SHOWN_PER_LINE = 5
"""Entries named in one line of the report; `--json` lists them all."""

SHA256_HEX = re.compile(r"[0-9a-f]{64}")

RUN_STATUSES = ("running", "completed", "failed")
"""What server.checkpoint writes: running until it finishes completed or failed."""


@dataclass(frozen=True)
class Check:
    """One verified fact, or the discrepancy found."""

    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """What could not be checked, one line each."""
    void: list[dict[str, Any]] = field(default_factory=list)
    """Every ledger entry whose ε is void (see `server.audit_ledgers`)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def complete(self) -> bool:
        return not self.unchecked

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "complete": self.complete,
            "checks": [asdict(c) for c in self.checks],
            "unchecked": self.unchecked,
            "void_epsilon": self.void,
        }

    def fail(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, False, detail))

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def raise_for_failure(self, *, partial: bool = False) -> None:
        """VerificationFailed naming the first discrepancy; else AuditIncomplete naming what was not
        checked, unless `partial`."""
        failed = [c for c in self.checks if not c.ok]
        if failed:
            others = len(failed) - 1
            more = f" (and {others} more discrepanc{'y' if others == 1 else 'ies'})" if others else ""
            raise VerificationFailed(f"{failed[0].name}: {failed[0].detail}{more}")
        if self.unchecked and not partial:
            raise AuditIncomplete(
                f"not verified: {len(self.unchecked)} item(s) not checked: {'; '.join(self.unchecked)}. Give "
                "what is named, or pass --partial to accept these gaps"
            )


def verify_run(
    run_dir: str | Path,
    ledger_paths: list[str | Path],
    public_key_paths: list[str | Path],
) -> VerifyReport:
    """Run every check (collecting, not stopping at, discrepancies); see the module docstring."""
    run_dir = Path(run_dir)
    manifest = _read_manifest(run_dir)
    public_keys = [(Path(p), keys.load_public_key(p)) for p in public_key_paths]
    report = VerifyReport()
    _check_run_shape(manifest, report)
    _check_adapters(run_dir, manifest, report)
    ledgers, given = _read_ledgers(ledger_paths, report)
    ok_ledgers: dict[str, LedgerFile] = {}
    for ledger in ledgers:
        if _check_ledger(ledger, public_keys, report) and ledger.site_id:
            if ledger.site_id in ok_ledgers:
                report.fail(f"ledger {ledger.path}", f"a second ledger for site {ledger.site_id}")
            ok_ledgers[ledger.site_id] = ledger
    signers = {x.public_key_hex for x in ledgers}
    for path, key in public_keys:
        if keys.public_key_raw(key).hex() not in signers:
            report.fail(f"public key {path}", "signs none of the given ledgers (the wrong key, or its ledger missing)")
    _check_noise(list(ok_ledgers.values()), report)  # a ledger that fails its own checks is reported already
    _check_manifest_against_ledgers(manifest, ok_ledgers, given, report)
    return report


# ---- 1 + 2. the run directory -------------------------------------------------------------------


def _read_manifest(run_dir: Path) -> Manifest:
    """The manifest through its one schema (common/manifest.py). A missing one is the auditor's mistake
    (ConfigError); one that does not read as a manifest is a discrepancy of the run under audit."""
    if not (run_dir / MANIFEST).is_file():
        return read_manifest(run_dir)  # raises ManifestError (ConfigError) naming the path
    try:
        return read_manifest(run_dir)
    except ManifestError as err:
        raise VerificationFailed(f"the run's manifest is malformed: {err}") from None


def _rounds(manifest: Manifest) -> list[RoundEntry]:
    return sorted(manifest.rounds, key=lambda r: r.round)


def _aggregated_sites(manifest: Manifest) -> set[str]:
    return {s.site_id for r in manifest.rounds if r.kind == "train" for s in r.sites}


def _declaration_problem(s: SiteEntry) -> str | None:
    """Why an aggregated site's declaration cannot be checked at all (None: it can)."""
    if s.update_sha256 is None or not SHA256_HEX.fullmatch(s.update_sha256):
        return "declares no update sha256"
    if s.privacy is None:
        return "declares no privacy spent"
    if s.privacy.accountant not in set(Accountant):
        return "declares an accountant that is neither rdp nor prv"
    if s.privacy.conversion is not None and s.privacy.conversion not in set(EpsilonConversion):
        return "declares an unknown ε conversion"
    return None


def _check_run_shape(manifest: Manifest, report: VerifyReport) -> None:
    rounds = _rounds(manifest)
    numbers = [r.round for r in rounds]
    completed, planned, status = manifest.completed_rounds, manifest.rounds_planned, manifest.status
    min_sites = (manifest.config.get("federation") or {}).get("min_sites")
    min_sites = min_sites if isinstance(min_sites, int) and not isinstance(min_sites, bool) else 1
    problems = []
    if status not in RUN_STATUSES:
        problems.append(f"its status is not one of {', '.join(RUN_STATUSES)}")
    if numbers != list(range(len(numbers))):
        problems.append(f"its rounds {numbers} are not 0..{len(numbers) - 1} without gaps")
    if completed != len(numbers) - 1:
        problems.append(f"completed_rounds is {completed} but it records {len(numbers)} round(s)")
    if status == "completed" and (completed < 1 or completed != planned):
        problems.append(f"status is completed after {max(completed, 0)} of {planned} planned training rounds")
    for r in rounds:
        if (r.round == 0 and r.kind != "initial") or (r.round > 0 and r.kind != "train"):
            problems.append(
                f"round {r.round} is not a training round (kind {r.kind}; round 0 alone is the initial adapter)"
            )
        elif r.kind == "train":
            ids = [s.site_id for s in r.sites]
            if len(ids) < min_sites:
                problems.append(f"training round {r.round} aggregated {len(ids)} site(s), min_sites is {min_sites}")
            if len(set(ids)) != len(ids):
                problems.append(f"training round {r.round} lists a site twice")
            problems += [f"round {r.round} site {s.site_id} {p}" for s in r.sites if (p := _declaration_problem(s))]
    hidden = _aggregated_sites(manifest) - set(manifest.sites.values())
    if hidden:
        problems.append(f"its site table lacks aggregated site(s) {', '.join(sorted(hidden))}")
    if problems:
        report.fail("run manifest", "; ".join(problems))
    else:
        report.passed("run manifest", f"rounds 0..{completed}, status {status}, every training round aggregated sites")


def _check_adapters(run_dir: Path, manifest: Manifest, report: VerifyReport) -> None:
    rounds = _rounds(manifest)
    for r in rounds:
        _hash_check(f"round {r.round} adapter", run_dir / "rounds" / str(r.round), r.adapter_sha256, report)
    final = run_dir / "final"
    if manifest.status == "completed" and rounds:
        _hash_check("final adapter", final, rounds[-1].adapter_sha256, report)
    elif final.exists():
        files = [p for p in (final / ADAPTER_FILE, final / (ADAPTER_FILE + encryption.SUFFIX)) if p.is_file()]
        recorded = {r.adapter_sha256 for r in rounds}
        if not files or (files[0].name == ADAPTER_FILE and sha256_file(files[0]) not in recorded):
            report.fail("final adapter", f"{final} exists but holds no adapter of a round in the manifest")
    listed = {str(r.round) for r in rounds}
    directory = run_dir / "rounds"
    extra = sorted(
        d.name for d in directory.glob("*") if d.is_dir() and not d.name.startswith(".") and d.name not in listed
    )
    if extra:
        report.fail("round directories", f"rounds/{', rounds/'.join(extra)} not in the manifest")


def _hash_check(name: str, directory: Path, expected: str, report: VerifyReport) -> None:
    path = directory / ADAPTER_FILE
    if not path.exists():
        if (directory / (ADAPTER_FILE + encryption.SUFFIX)).is_file():
            report.unchecked.append(f"{name}: encrypted at rest, its sha256 cannot be checked without the key")
        else:
            report.fail(name, f"{path} is missing (manifest records sha256 {expected[:16]}...)")
        return
    actual = sha256_file(path)
    if actual != expected:
        report.fail(name, f"{path} has sha256 {actual[:16]}..., the manifest recorded {expected[:16]}...")
    else:
        report.passed(name, f"sha256 {actual[:16]}... matches the manifest")


# ---- 3 + 4. ledgers -----------------------------------------------------------------------------


def _read_ledgers(paths: list[str | Path], report: VerifyReport) -> tuple[list[LedgerFile], set[str]]:
    """The ledgers that parse, and the site ids of every given ledger (unreadable ones fail here; a
    missing one is a ConfigError)."""
    ledgers = []
    for path in map(ledger_file_path, paths):
        try:
            ledgers.append(LedgerFile(path, read_ledger(path)))
        except SiloError as err:
            report.fail(f"ledger {path}", str(err))
    return ledgers, {x.site_id for x in ledgers if x.site_id}


def _check_ledger(ledger: LedgerFile, public_keys: list[tuple[Path, Any]], report: VerifyReport) -> bool:
    name = f"ledger {ledger.path} (site {ledger.site_id or '?'})"
    key = next((k for _, k in public_keys if keys.public_key_raw(k).hex() == ledger.public_key_hex), None)
    if key is None:
        report.unchecked.append(
            f"site {ledger.site_id or '?'}: no --public-key given signs ledger {ledger.path}, so who signed it "
            "was not checked (only that its chain and signatures agree with the key it names)"
        )
    result = verify_ledger(ledger.path, key)
    if not result.ok:
        report.fail(name, f"entry {result.first_bad_index}: {result.reason}")
        return False
    authenticity = "the site's public key" if key is not None else "the key the ledger names"
    report.passed(name, f"{result.entries} entries; chain and signatures verified against {authenticity}")
    problem, worst = ledger_epsilon_problem(ledger.entries)
    if problem:
        report.fail(f"{name} ε", problem)
        return False
    report.passed(
        f"{name} ε",
        f"{len(ledger.entries)} entries recomputed with dp-accounting; largest relative "
        f"difference {worst:.1e}; no total above budget",
    )
    return True


def _check_noise(ledgers: list[LedgerFile], report: VerifyReport) -> None:
    for restart in ledger_restarts(ledgers):
        report.checks.insert(0, Check("ledger restart", False, restart))
    void = void_epsilon_entries(ledgers)
    report.void = [asdict(v) for v in void]
    if void:
        shown = "; ".join(v.describe() for v in void[:SHOWN_PER_LINE])
        more = f"; and {len(void) - SHOWN_PER_LINE} more" if len(void) > SHOWN_PER_LINE else ""
        report.checks.insert(0, Check("fresh noise", False, f"{VOID_EPSILON}: {shown}{more}"))
    elif ledgers:
        rounds = sum(len(x.rounds()) for x in ledgers)
        report.passed("fresh noise", f"{rounds} round entries each record fresh noise and a distinct update sha256")


# ---- 5 + 6. manifest against ledgers ------------------------------------------------------------

_SHARED_FIELDS = (
    "noise_multiplier",
    "sample_rate",
    "steps",
    "delta",
    "epsilon_round",
    "epsilon_total",
    "budget_epsilon",
)
"""Fields the manifest's privacy declaration and the site's ledger entry must carry alike."""


def _check_manifest_against_ledgers(
    manifest: Manifest, ledgers: dict[str, LedgerFile], given: set[str], report: VerifyReport
) -> None:
    run_id = manifest.run_id
    train = {r.round: r for r in manifest.rounds if r.kind == "train"}
    declared: dict[str, list[tuple[int, SiteEntry]]] = defaultdict(list)
    for n in sorted(train):
        for s in train[n].sites:
            if _declaration_problem(s) is None:  # the others fail the manifest check
                declared[s.site_id].append((n, s))
    for site_id in sorted(_aggregated_sites(manifest) | set(manifest.sites.values())):
        ledger = ledgers.get(site_id)
        privacy = [s.privacy for _, s in declared[site_id] if s.privacy is not None]
        problems = [f"the manifest's declared {p}" for x in privacy if (p := declared_epsilon_problem(x))]
        if ledger is None:
            total = declared_total_problem(privacy)
            problems += [f"the manifest's declared {total}"] if total else []
            if site_id not in given:
                report.unchecked.append(
                    f"site {site_id}: took part but no ledger was given, so its update hashes "
                    "and ε were not checked against its ledger"
                )
        else:
            problems += _site_against_ledger(run_id, declared[site_id], ledger)
        if problems:
            report.fail(f"site {site_id}", "; ".join(problems))
        elif ledger is not None:
            report.passed(
                f"site {site_id}",
                f"{len(declared[site_id])} aggregated update(s) match the ledger's "
                "update sha256, signing key, DP events and ε",
            )
    stopped = manifest.completed_rounds + 1 if manifest.status != "completed" else None
    for site_id, ledger in sorted(ledgers.items()):
        aggregated = {n for n, _ in declared[site_id]}
        late: list[dict[str, Any]] = []
        unknown: list[dict[str, Any]] = []
        for entry in ledger.rounds():
            n = entry["round"]
            if entry["run_id"] != run_id or n in aggregated:
                continue
            (late if n in train or n == stopped else unknown).append(entry)
        if unknown:
            named = ", ".join(f"round {e['round']} (entry {e['index']})" for e in unknown)
            report.fail(
                f"site {site_id}",
                f"its ledger records {named} of run {run_id}, which the manifest has no training round for",
            )
        if late:
            named = ", ".join(str(e["round"]) for e in late)
            report.passed(
                f"site {site_id} unaggregated",
                f"round(s) {named} trained and paid for by the site but not aggregated (rejected, late, or "
                "the round the run stopped in)",
            )


def _site_against_ledger(run_id: str, declared: list[tuple[int, SiteEntry]], ledger: LedgerFile) -> list[str]:
    recorded: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in ledger.rounds():
        if e["run_id"] == run_id:
            recorded[e["round"]].append(e)
    problems = []
    for n, s in declared:
        sha = str(s.update_sha256)
        entry = next((e for e in recorded[n] if e["update_sha256"] == sha), None)
        if not recorded[n]:
            problems.append(
                f"round {n}: the manifest aggregated an update (sha256 {sha[:16]}...) that the site's "
                "ledger has no round entry for (ledger truncated, or not this site's)"
            )
        elif entry is None:
            first = recorded[n][0]
            problems.append(
                f"round {n}: update sha256 in the manifest {sha[:16]}... differs from the ledger's "
                f"{first['update_sha256'][:16]}... (entry {first['index']})"
            )
        else:
            problems += _privacy_against_entry(n, s, entry, ledger)
    return problems


def _privacy_against_entry(n: int, s: SiteEntry, entry: dict[str, Any], ledger: LedgerFile) -> list[str]:
    problems = []
    declared = asdict(s.privacy) if s.privacy is not None else {}
    mismatch = [
        f"{name}: manifest {declared.get(name)!r}, ledger {entry[name]!r}"
        for name in _SHARED_FIELDS
        if not _same(declared.get(name), entry[name])
    ]
    if mismatch:
        problems.append(
            f"round {n}: the manifest's privacy record differs from ledger entry {entry['index']}: {'; '.join(mismatch)}"
        )
    fingerprint = s.signing_key_fingerprint
    if fingerprint is not None and fingerprint != ledger.key_fingerprint:
        problems.append(
            f"round {n}: the update was signed by key {fingerprint[:16]}..., the ledger by "
            f"{str(ledger.key_fingerprint)[:16]}..."
        )
    return problems


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    x, y = decode_epsilon(a), decode_epsilon(b)
    return x == y or abs(x - y) <= SAME_NUMBER_REL_TOL * max(abs(x), abs(y))
