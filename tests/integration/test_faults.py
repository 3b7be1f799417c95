"""Faults with real processes: a site's SuperNode dies in the middle of a round."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from silo.launch import LocalFederation, follow_run
from tests.integration.conftest import make_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_supernode_killed_mid_round_the_round_completes_with_the_rest(tmp_path: Path, base_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, base_model_dir, rounds=2, sites=3)
    fed_toml = layout.federation_config
    fed_toml.write_text(fed_toml.read_text().replace("min_sites = 3", "min_sites = 2"))
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
