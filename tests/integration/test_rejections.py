"""Real processes: a site missing from the coordinator's key registry is rejected with its reason,
and the round completes with the two registered sites."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from common.pki import COORDINATOR_SIGNING_KEY
from silo.demo import write_federation
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import make_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for_nodes(fed: LocalFederation, count: int, timeout: float = 60.0) -> None:
    """All SuperNodes connected before the run starts, so that every site is asked in round 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fed.connection.flwr("supernode", "list", "--format", "json", timeout=30)
        try:
            nodes = json.loads(out.stdout).get("nodes", [])
        except json.JSONDecodeError:
            nodes = []
        if sum(str(n.get("status", "")).lower() == "online" for n in nodes) >= count:
            return
        time.sleep(0.5)
    pytest.fail(f"{count} SuperNodes not online after {timeout:.0f}s: {out.stdout[-500:]} {out.stderr[-500:]}")


def test_unregistered_site_is_rejected_and_the_round_goes_on(tmp_path: Path, federation_model_dir: Path) -> None:
    # All three sites hold keys from `silo keys` (so site-2 joins over TLS with SuperNode auth and
    # signs its update), but the coordinator's registry leaves site-2 out.
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=1, sites=3)
    registry = json.loads(layout.registry.read_text())
    del registry["sites"]["site-2"]
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    # The coordinator signs its run request with the key beside the registry it is given.
    key = layout.registry.parent / COORDINATOR_SIGNING_KEY
    shutil.copy2(key, tmp_path / COORDINATOR_SIGNING_KEY)
    write_federation(
        layout,
        base_model=str(federation_model_dir),
        rounds=1,
        min_sites=2,
        timeout_s=180,
        registry=tmp_path / "registry.json",
    )

    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        _wait_for_nodes(fed, 3)
        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=600, log=sys.stderr)

    assert manifest["status"] == "completed"
    round1 = next(r for r in manifest["rounds"] if r["round"] == 1)
    assert {s["site_id"] for s in round1["sites"]} == {"site-0", "site-1"}
    # Refused before anyone trains (round-0 handshake, server/handshake.py owns the wording), named in the reason.
    [rejection] = round1["rejected"]
    assert "'site-2'" in rejection["reason"]
    assert round1["security"]["site_identity"] == "registry"
    assert all(s["signing_key_fingerprint"] and s["update_norm"] > 0 for s in round1["sites"])
    # The real site's declaration passed the gate's schema: the weight within the declared split, the
    # ledger index recorded, and the coordinator's ledger heads kept beside the run directory.
    assert all(0 < s["num_examples"] <= s["privacy"]["dataset_size"] for s in round1["sites"])
    heads = json.loads((layout.run_dir.parent / "ledger_heads.json").read_text())["sites"]
    assert {site: h["ledger_index"] for site, h in heads.items()} == {
        s["site_id"]: s["privacy"]["ledger_index"] for s in round1["sites"]
    }
    assert round1["security"]["norm_bound"].startswith("relative: 10 x")
