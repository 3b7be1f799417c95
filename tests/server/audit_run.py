"""A small finished run for the audit tests, written by the real writers (no Flower, ~1 s).

The coordinator's `RunDirectory` writes the manifest and adapters; each site's `Ledger` plans and
records its rounds; `export_ledger` makes what an auditor receives. The manifest's per-site records
are what `client.site._site_record` declares: the plan's event and ε, the update's sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    signing_keys: dict[str, object]

    def ledger_args(self) -> list[str]:
        return [arg for site in SITES for arg in ("--ledger", str(self.exports[site]))]

    def key_args(self) -> list[str]:
        return [arg for site in SITES for arg in ("--public-key", str(self.public_keys[site]))]


def update_sha(site: str, rnd: int) -> str:
    return hashlib.sha256(f"{site}/{rnd}".encode()).hexdigest()


def make_audit_run(root: Path, *, rejected_round: int | None = 2) -> AuditRun:
    run = RunDirectory.open_or_create(root / "run", config_hash="c0" * 32, config={"federation": {"strategy": "fedavg"}},
                                      base_model="tiny", code_version="test", rounds_planned=ROUNDS)  # fmt: skip
    arrays = {"lora_A": np.zeros((4, 8), dtype=np.float32)}
    run.save_round(0, arrays, adapter_config={"r": 8}, record={"kind": "initial"})
    signing = {site: keys.generate_signing_key() for site in SITES}
    ledgers = {
        site: Ledger.open(root / "sites" / site / "ledger.jsonl", signing_key=signing[site], create=True)
        for site in SITES
    }
    try:
        for rnd in range(1, ROUNDS + 1):
            sites = []
            for i, site in enumerate(SITES):
                ledger = ledgers[site]
                plan = ledger.plan_round(**EVENT, delta=DELTA, accountant="rdp", budget_epsilon=BUDGET,
                                         budget_delta=DELTA, run_id=run.run_id, round=rnd, site_id=site)  # fmt: skip
                ledger.record_round(plan, run_id=run.run_id, round=rnd, site_id=site, max_grad_norm=1.0,
                                    dataset_size=500, update_sha256=update_sha(site, rnd))  # fmt: skip
                sites.append({
                    "node_id": 100 + i, "site_id": site, "num_examples": 500, "train_loss": 3.0 - rnd / 10,
                    "scrub": {"records_in": 600, "quarantined": i, "entities": {"PERSON": 40 + i, "EMAIL_ADDRESS": 12}},
                    "privacy": {
                        "dp_enabled": True, **EVENT, "max_grad_norm": 1.0, "delta": DELTA, "accountant": "rdp",
                        "conversion": "balle2020", "epsilon_round": plan.epsilon_round,
                        "epsilon_total": plan.epsilon_total_after, "budget_epsilon": BUDGET,
                    },
                    "update_sha256": update_sha(site, rnd),
                })  # fmt: skip
            rejected = ([{"node_id": 300, "reason": "UpdateRejected: update norm 41.2 > max_update_norm 10"}]
                        if rnd == rejected_round else [])  # fmt: skip
            arrays = {"lora_A": np.full((4, 8), rnd, dtype=np.float32)}
            run.save_round(rnd, arrays, adapter_config={"r": 8},
                           record={"kind": "train", "sites": sites, "rejected": rejected,
                                   "train": {"train_loss": 3.0 - rnd / 10}})  # fmt: skip
            run.update_round(rnd - 1, eval={"eval_loss": 3.2 - rnd / 10, "sites": 2})
    finally:
        for ledger in ledgers.values():
            ledger.close()
    run.finish("completed")
    exports, public_keys = {}, {}
    (root / "keys").mkdir(parents=True, exist_ok=True)
    for site in SITES:
        exports[site] = export_ledger(root / "sites" / site / "ledger.jsonl", root / "audit" / site)
        public_keys[site] = keys.save_public_key(signing[site], root / "keys" / f"{site}.pub")
    return AuditRun(root=root, run_dir=root / "run", exports=exports, public_keys=public_keys, signing_keys=signing)
