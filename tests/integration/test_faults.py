"""Faults with real processes: a site's SuperNode, or the coordinator, dies in the middle of a round."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from silo.cli import main
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import make_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_supernode_killed_mid_round_the_round_completes_with_the_rest(
    tmp_path: Path, federation_model_dir: Path
) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2, sites=3, min_sites=2)
    fed_toml = layout.federation_config
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(fed_toml), "run-dir": str(layout.run_dir)})
        victim = fed.proc("site-2")
        deadline = time.monotonic() + 300
        while "Receiving: train message" not in victim.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "site-2 never received its first train message"
            time.sleep(0.2)
        fed.kill_site(2)  # SIGKILL the SuperNode and the ClientApp it started, mid-round
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=900, log=sys.stderr)

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 2
    round1 = next(r for r in manifest["rounds"] if r["round"] == 1)
    assert {s["site_id"] for s in round1["sites"]} == {"site-0", "site-1"}
    assert round1["rejected"], "the dead site's missing update must be recorded with a reason"
    assert all(r["reason"] for r in round1["rejected"])


def _ledger_kinds(site_toml: Path, rnd: int) -> list[str]:
    path = site_toml.parent / "state" / "privacy_ledger.jsonl"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e["kind"] for e in entries if e.get("round") == rnd]


def test_coordinator_killed_mid_round_resumes_and_nothing_is_spent_twice_unseen(
    tmp_path: Path, federation_model_dir: Path
) -> None:
    """The coordinator dies while round 2 is being trained (a site has already reserved it in its
    ledger). Restarted with the same command, the run completes; round 1 is not re-run; the spend of the
    interrupted round stays in the sites' ledgers (fail closed), and the audit still verifies."""
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=3)
    run_config = {"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)}
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        fed.submit(run_config)
        deadline = time.monotonic() + 600
        while not any("reserve" in _ledger_kinds(s, 2) for s in sites):
            assert time.monotonic() < deadline, "no site started round 2"
            time.sleep(0.1)
        fed.kill_coordinator()
        manifest = json.loads((layout.run_dir / "manifest.json").read_text())
        assert manifest["completed_rounds"] == 1, "the coordinator must die during round 2 for this test"
        round1_sha = next(r["adapter_sha256"] for r in manifest["rounds"] if r["round"] == 1)

        fed.start_superlink()
        run_id = fed.submit(run_config)
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=900, log=sys.stderr)

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 3
    assert manifest["resumes"][-1]["from_round"] == 1
    assert next(r["adapter_sha256"] for r in manifest["rounds"] if r["round"] == 1) == round1_sha
    for site in sites:  # round 2 was paid for twice at a site that had started it: both stay spent
        assert _ledger_kinds(site, 2).count("reserve") >= 1
    ledgers = [str(s.parent / "state" / "privacy_ledger.jsonl") for s in sites]
    keys = [str(s.parent / "state" / "site_signing.pub") for s in sites]
    argv = ["audit", "verify", str(layout.run_dir)]
    for ledger, key in zip(ledgers, keys, strict=True):
        argv += ["--ledger", ledger, "--public-key", key]
    assert main(argv) == 0
