"""A real SuperLink and real SuperNodes, as separate processes on loopback sockets."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from common.config import TaskConfig
from common.model import load_base_model
from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import exact_holdout_loss, make_layout

pytestmark = pytest.mark.integration


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_federation_two_sites_two_rounds_completes_and_learns(tmp_path: Path, federation_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2)
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=600, log=sys.stderr)

    assert manifest["status"] == "completed"
    assert manifest["completed_rounds"] == 2
    rounds = {r["round"]: r for r in manifest["rounds"]}
    assert sorted(rounds) == [0, 1, 2]
    assert {s["site_id"] for s in rounds[2]["sites"]} == {"site-0", "site-1"}
    # The global adapter changed, and it beats round 0 on the sites' held-out records.
    assert rounds[2]["adapter_sha256"] != rounds[0]["adapter_sha256"]
    # The sites' eval_loss is a DP release (noisy); the exact hold-out loss is computed here.
    assert exact_holdout_loss(sites, layout.run_dir, 2) < exact_holdout_loss(sites, layout.run_dir, 0)
    assert rounds[2]["eval"]["eval_loss_noise_std"] > 0  # the answers were noised
    # Every aggregate was answered about by both sites: rounds 0 and 1 a round late (each site's runtime
    # answers after its reply and sends the answer with its next one, client/answer_later.py), round 2 by
    # the final evaluation, which also carried the late answers about round 1.
    assert [rounds[k]["eval"]["sites"] for k in (0, 1, 2)] == [2, 2, 2]
    # Only the adapter crossed the wire: each site sent its delta in fp16, exactly half the fp32 adapter's bytes.
    adapter = load_file(layout.run_dir / "final" / "adapter_model.safetensors")
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter.values())
    assert rounds[1]["transport"] == {"wire_encoding": "fp16", "bytes_fp32_adapter": adapter_bytes}
    assert all(s["bytes_up"] == adapter_bytes // 2 for s in rounds[1]["sites"])
    assert rounds[1]["bytes_down_per_site"] == adapter_bytes // 2
    assert all(".lora_" in k for k in adapter)
    # The final adapter loads with PEFT onto the base model, with the saved values.
    model = PeftModel.from_pretrained(
        load_base_model(str(federation_model_dir), TaskConfig()), layout.run_dir / "final"
    )
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(adapter)
    key = next(iter(adapter))
    param = next(p for n, p in loaded.items() if n.replace(".default", "") == key)
    assert torch.equal(param.detach(), adapter[key])


def test_federation_resumes_after_coordinator_killed(tmp_path: Path, federation_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=3)
    run_config = {"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)}
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        fed.submit(run_config)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (layout.run_dir / "manifest.json").exists() and _manifest(layout.run_dir)["completed_rounds"] >= 1:
                break
            time.sleep(0.5)
        fed.kill_coordinator()
        killed_after = _manifest(layout.run_dir)["completed_rounds"]
        assert 1 <= killed_after < 3, "the coordinator must die between rounds for this test"
        round1_sha = next(r["adapter_sha256"] for r in _manifest(layout.run_dir)["rounds"] if r["round"] == 1)

        # The documented recovery: restart the SuperLink, submit the same config and run directory.
        fed.start_superlink()
        run_id = fed.submit(run_config)
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=600, log=sys.stderr)

    assert manifest["status"] == "completed"
    assert manifest["completed_rounds"] == 3
    assert manifest["resumes"][-1]["from_round"] == killed_after
    # Completed rounds were not re-run: round 1's adapter is the one written before the crash.
    assert next(r["adapter_sha256"] for r in manifest["rounds"] if r["round"] == 1) == round1_sha
    assert [r["round"] for r in manifest["rounds"]] == [0, 1, 2, 3]
