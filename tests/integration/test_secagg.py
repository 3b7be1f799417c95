"""Secure aggregation with real processes: a SuperLink and three SuperNodes, the sites' SecAgg+
secrets carried between the round's messages in each SuperNode's own state."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import exact_holdout_loss, make_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_secagg_run_completes_and_the_coordinator_sees_only_masked_updates(
    tmp_path: Path, federation_model_dir: Path
) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2, sites=3)
    fed_toml = layout.federation_config
    fed_toml.write_text(fed_toml.read_text() + "\n[secagg]\nenabled = true\nclip = 1.0\n")
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(fed_toml), "run-dir": str(layout.run_dir)})
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=900, log=sys.stderr)

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 2
    rounds = {r["round"]: r for r in manifest["rounds"]}
    for n in (1, 2):
        secagg = rounds[n]["secagg"]
        assert secagg["enabled"] is True
        assert secagg["dropped"] == []
        assert len(rounds[n]["sites"]) == 3
        # Individual updates were never seen in the clear: no per-site norm could be measured.
        assert all(s.get("update_norm") is None for s in rounds[n]["sites"])
    assert rounds[2]["adapter_sha256"] != rounds[0]["adapter_sha256"]
    # The sites' eval_loss is a DP release (noisy); the exact hold-out loss is computed here.
    assert exact_holdout_loss(sites, layout.run_dir, 2) < exact_holdout_loss(sites, layout.run_dir, 0)
    assert rounds[2]["eval"]["eval_loss_noise_std"] > 0  # the answers were noised
