"""The warm site runtime with real processes: it scrubs once per data version, scales to ten sites, and a
runtime killed mid-round loses nothing (its reservation stays spent; a fresh runtime serves the next round)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from silo.local_federation import LocalFederation
from silo.run_progress import follow_run
from tests.integration.conftest import make_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ledger(site_toml: Path) -> list[dict]:
    path = site_toml.parent / "state" / "privacy_ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _worker_pids(node_pid: int) -> list[int]:
    """The site runtime processes (client.runtime.worker) the node's supervisor started."""
    out = []
    for child in Path(f"/proc/{node_pid}/task/{node_pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"client.runtime.worker" in cmdline:
            out.append(int(child))
    return out


def test_ten_sites_complete_and_each_scrubs_its_records_once(tmp_path: Path, federation_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2, sites=10, records=30)
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=1500, log=sys.stderr)
        logs = {p.name: p.log.read_text(errors="replace") for p in fed.procs if p.name.startswith("site-")}

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 2
    for rnd in (1, 2):
        entry = next(r for r in manifest["rounds"] if r["round"] == rnd)
        assert {s["site_id"] for s in entry["sites"]} == {f"site-{i}" for i in range(10)}, entry["rejected"]
        assert entry["transport"]["wire_encoding"] == "fp16"
        assert all(s["bytes_up"] <= entry["transport"]["bytes_fp32_adapter"] / 2 for s in entry["sites"])
    # 2 train messages and 1 evaluate message per site: the records were read and scrubbed for the first only.
    assert len(logs) == 10
    for name, log in logs.items():
        assert log.count("[silo] loaded records") == 1, name
        assert log.count("[silo] loaded model") == 1, name


def test_a_runtime_killed_mid_round_keeps_its_reservation_and_the_next_round_gets_a_fresh_one(
    tmp_path: Path, federation_model_dir: Path
) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2, sites=2, min_sites=1)
    fed_toml = layout.federation_config
    victim_toml = sites[0]
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(fed_toml), "run-dir": str(layout.run_dir)})
        deadline = time.monotonic() + 600
        while not any(e["kind"] == "reserve" and e["round"] == 1 for e in _ledger(victim_toml)):
            assert time.monotonic() < deadline, "site-0 never reserved round 1"
            time.sleep(0.05)
        node = fed.proc("site-0")
        (worker,) = _worker_pids(node.popen.pid)
        os.kill(worker, signal.SIGKILL)  # mid-training: reserved, not recorded, nothing sent
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=900, log=sys.stderr)
        log = node.log.read_text(errors="replace")
        assert node.alive(), "the node must outlive its runtime"

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 2
    round1, round2 = (next(r for r in manifest["rounds"] if r["round"] == n) for n in (1, 2))
    assert {s["site_id"] for s in round1["sites"]} == {"site-1"}
    assert round1["rejected"] and all(r["reason"] for r in round1["rejected"])
    assert "site-0" in {s["site_id"] for s in round2["sites"]}, "a fresh runtime serves the next round"
    assert "the site runtime died" in log and "starting a fresh runtime" in log

    entries = _ledger(victim_toml)
    reserve1 = next(e for e in entries if e["kind"] == "reserve" and e["round"] == 1)
    assert not any(e["kind"] == "round" and e["round"] == 1 for e in entries), "round 1 was never completed"
    later = [e for e in entries if e["index"] > reserve1["index"]]
    assert later, "the site went on after the kill"
    # The reservation stays spent: every later total includes it.
    assert all(e["epsilon_total"] >= reserve1["epsilon_total"] for e in later)
    # What site-0 declared in round 2 is its ledger's total, reservation included.
    declared = next(s for s in round2["sites"] if s["site_id"] == "site-0")["privacy"]["epsilon_total"]
    round2_entry = next(e for e in later if e["kind"] == "round" and e["round"] == 2)
    assert declared == pytest.approx(round2_entry["epsilon_total"]) and declared > reserve1["epsilon_total"]


def test_a_runtime_killed_with_an_answer_unsent_loses_neither_the_answer_nor_its_charge(
    tmp_path: Path, federation_model_dir: Path
) -> None:
    """The hold-out answer a runtime computes after its reply (client/answer_later.py) is charged before it
    is kept, in memory and in the site's state directory; killed before its next reply, the runtime loses
    neither: the fresh runtime serving the next round sends the kept answer, once."""
    from dataclasses import replace

    from common.config import load_site_config

    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=2, sites=2)
    victim_toml, slow_toml = sites
    slow = load_site_config(slow_toml)  # site-1 trains six epochs a round: site-0 waits for it with its answer kept
    slow_toml.write_text(replace(slow, training=replace(slow.training, epochs=6)).to_toml(defaults=True))
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        run_id = fed.submit({"silo-config": str(layout.federation_config), "run-dir": str(layout.run_dir)})
        deadline = time.monotonic() + 600
        kept = victim_toml.parent / "state" / "pending_answer.json"
        while not kept.exists():  # charged, then kept (in the milliseconds between, a kill loses the answer)
            assert time.monotonic() < deadline, "site-0 never kept an answer about round 1's adapter"
            time.sleep(0.02)
        assert any(e["kind"] == "evaluation" and e["round"] == 1 for e in _ledger(victim_toml)), "kept uncharged"
        assert not any(e["kind"] == "round" and e["round"] == 1 for e in _ledger(slow_toml)), "site-1 was too quick"
        node = fed.proc("site-0")
        (worker,) = _worker_pids(node.popen.pid)
        os.kill(worker, signal.SIGKILL)  # charged, kept in memory, not yet sent
        manifest = follow_run(fed.connection, run_id, layout.run_dir, timeout=900, log=sys.stderr)

    assert manifest["status"] == "completed" and manifest["completed_rounds"] == 2
    rounds = {r["round"]: r for r in manifest["rounds"]}
    assert {s["site_id"] for s in rounds[2]["sites"]} == {"site-0", "site-1"}, "a fresh runtime serves round 2"
    # Round 0's adapter: site-0's answer came with its fresh runtime's round-2 reply. Every round: both sites.
    assert [rounds[k]["eval"]["sites"] for k in (0, 1, 2)] == [2, 2, 2]
    assert not kept.exists(), "sent, so no longer kept"
    entries = _ledger(victim_toml)
    # One charge per answer, the kept one included: three answers (rounds 0, 1, 2), three evaluation entries.
    assert [e["round"] for e in entries if e["kind"] == "evaluation"] == [1, 2, 2]
    charged = next(e for e in entries if e["kind"] == "evaluation" and e["round"] == 1)
    # The charge stays spent: every later total includes it, and round 2's declaration says so.
    assert all(e["epsilon_total"] >= charged["epsilon_total"] for e in entries if e["index"] > charged["index"])
    declared = next(s for s in rounds[2]["sites"] if s["site_id"] == "site-0")["privacy"]["epsilon_total"]
    assert declared > charged["epsilon_total"]
