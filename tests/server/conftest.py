"""Fixtures for the audit tests: small finished runs written by the real writers (no Flower, ~1 s).

The coordinator's `RunDirectory` writes the manifest and adapters; each site's `Ledger` plans and
records its rounds; `export_ledger` makes what an auditor receives. The manifest's per-site records
are what a site declares: the plan's event and ε, the update's sha256.

    audit_run        a private copy of one completed 2-site, 2-round run (tests tamper with it)
    make_audit_run   the builder, for runs that differ (more runs on the same ledgers, other noise)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.ledger import Ledger, export_ledger
from common import keys
from server.checkpoint import RunDirectory

SITES = ("hospital-a", "bank-c")
ROUNDS = 2
DELTA = 1e-5
EVENT = {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 100}  # ~0.96 ε a round alone
BUDGET = 10.0


@dataclass
class AuditRun:
    root: Path
    run_dir: Path
    exports: dict[str, Path]  # site id -> `silo ledger export` directory
    public_keys: dict[str, Path]  # site id -> PEM the site hands the auditor
    signing_keys: dict[str, Any]
    ledgers: dict[str, Path] = field(default_factory=dict)  # site id -> the site's own ledger
    sites: tuple[str, ...] = SITES

    def ledger_args(self, sites: tuple[str, ...] = SITES) -> list[str]:
        return [arg for site in sites for arg in ("--ledger", str(self.exports[site]))]

    def key_args(self, sites: tuple[str, ...] = SITES) -> list[str]:
        return [arg for site in sites for arg in ("--public-key", str(self.public_keys[site]))]

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: Any) -> None:
        self.manifest_path.write_text(json.dumps(manifest))

    def exported_ledger(self, site: str) -> Path:
        return self.exports[site] / "ledger.jsonl"

    def rewrite_ledger(self, site: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Apply `edit` to every entry of `site`'s exported ledger and sign it again with the site's
        key, chain included: what the key holder itself could write."""
        path = self.exported_ledger(site)
        lines, prev = [], "0" * 64
        for line in path.read_bytes().splitlines():
            entry = edit({k: v for k, v in json.loads(line).items() if k != "signature"})
            entry["prev_sha256"] = prev
            entry["signature"] = keys.sign(self.signing_keys[site], _canonical(entry)).hex()
            lines.append(_canonical(entry))
            prev = hashlib.sha256(lines[-1]).hexdigest()
        path.write_bytes(b"".join(line + b"\n" for line in lines))


def _canonical(entry: dict[str, Any]) -> bytes:
    """client.ledger's canonical form: sorted keys, no spaces, ASCII."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def random_update_sha(site: str, rnd: int) -> str:
    """Fresh noise makes every update different: a random stand-in for its hash."""
    return hashlib.sha256(np.random.default_rng().bytes(32)).hexdigest()


def build_audit_run(
    root: Path,
    *,
    rejected_round: int | None = 2,
    signing: dict[str, Any] | None = None,
    ledger_dir: Path | None = None,
    update_sha: Callable[[str, int], str] = random_update_sha,
    noise_source: str | None = None,
) -> AuditRun:
    """One completed run under `root`. `signing` and `ledger_dir` (from an earlier run) put this run
    on the same sites' ledgers; `noise_source` is what each round records (default: the ledger's)."""
    run = RunDirectory.open_or_create(
        root / "run",
        config_hash="c0" * 32,
        config={"federation": {"strategy": "fedavg", "min_sites": 2}},
        base_model="tiny",
        code_version="test",
        rounds_planned=ROUNDS,
        at_rest_key=None,
    )
    run.save_round(
        0, {"lora_A": np.zeros((4, 8), dtype=np.float32)}, adapter_config={"r": 8}, record={"kind": "initial"}
    )
    signing = signing or {site: keys.generate_signing_key() for site in SITES}
    ledger_dir = ledger_dir or root / "sites"
    paths = {site: ledger_dir / site / "ledger.jsonl" for site in SITES}
    ledgers = {site: Ledger.open(paths[site], signing_key=signing[site], create=True) for site in SITES}
    try:
        for rnd in range(1, ROUNDS + 1):
            sites = [
                _train_site(
                    ledgers[site], run.run_id, rnd, site, i, keys.fingerprint(signing[site]), update_sha, noise_source
                )
                for i, site in enumerate(SITES)
            ]
            rejected = []
            if rnd == rejected_round:
                rejected = [{"node_id": 300, "reason": "UpdateRejected: update norm 41.2 > max_update_norm 10"}]
            run.set_sites({str(s["node_id"]): s["site_id"] for s in sites})
            run.save_round(
                rnd,
                {"lora_A": np.full((4, 8), rnd, dtype=np.float32)},
                adapter_config={"r": 8},
                record={"kind": "train", "sites": sites, "rejected": rejected, "train": {"train_loss": 3.0 - rnd / 10}},
            )
            run.update_round(rnd - 1, eval={"eval_loss": 3.2 - rnd / 10, "sites": 2})
    finally:
        for ledger in ledgers.values():
            ledger.close()
    run.finish("completed")
    exports, public_keys = {}, {}
    (root / "keys").mkdir(parents=True, exist_ok=True)
    for site in SITES:
        exports[site] = export_ledger(paths[site], root / "audit" / site)
        public_keys[site] = keys.save_public_key(signing[site], root / "keys" / f"{site}.pub")
    return AuditRun(root, root / "run", exports, public_keys, signing, paths)


def _train_site(
    ledger: Ledger,
    run_id: str,
    rnd: int,
    site: str,
    i: int,
    fingerprint: str,
    update_sha: Callable[[str, int], str],
    noise_source: str | None,
) -> dict[str, Any]:
    plan = ledger.plan_round(
        **EVENT,
        delta=DELTA,
        accountant="rdp",
        budget_epsilon=BUDGET,
        budget_delta=DELTA,
        run_id=run_id,
        round=rnd,
        site_id=site,
        noise_source=noise_source,
    )
    sha = update_sha(site, rnd)
    ledger.record_round(
        plan,
        run_id=run_id,
        round=rnd,
        site_id=site,
        max_grad_norm=1.0,
        dataset_size=500,
        update_sha256=sha,
        noise_source=noise_source,
    )
    return {
        "node_id": 100 + i,
        "site_id": site,
        "num_examples": 500,
        "metrics": {"train_loss": 3.0 - rnd / 10},
        "scrub": {"records_in": 600, "quarantined": i, "entities": {"PERSON": 40 + i, "EMAIL_ADDRESS": 12}},
        "privacy": {
            "dp_enabled": True,
            **EVENT,
            "max_grad_norm": 1.0,
            "delta": DELTA,
            "accountant": "rdp",
            "conversion": "balle2020",
            "epsilon_round": plan.epsilon_round,
            "epsilon_total": plan.epsilon_total_after,
            "budget_epsilon": BUDGET,
        },
        "update_sha256": sha,
        "signing_key_fingerprint": fingerprint,
    }


def copy_audit_run(run: AuditRun, root: Path) -> AuditRun:
    shutil.copytree(run.root, root)

    def moved(p: Path) -> Path:
        return root / p.relative_to(run.root)

    return AuditRun(
        root=root,
        run_dir=moved(run.run_dir),
        exports={s: moved(p) for s, p in run.exports.items()},
        public_keys={s: moved(p) for s, p in run.public_keys.items()},
        signing_keys=run.signing_keys,
        ledgers={s: moved(p) for s, p in run.ledgers.items()},
    )


@pytest.fixture(scope="session")
def audit_template(tmp_path_factory: pytest.TempPathFactory) -> AuditRun:
    return build_audit_run(tmp_path_factory.mktemp("audit-template"))


@pytest.fixture
def audit_run(audit_template: AuditRun, tmp_path: Path) -> AuditRun:
    """A private copy of the template run: tests tamper with it."""
    return copy_audit_run(audit_template, tmp_path / "r")


@pytest.fixture
def make_audit_run() -> Callable[..., AuditRun]:
    return build_audit_run
