"""The operator's path with real processes: `silo coordinator start --keys` registers the sites'
SuperNode keys over TLS, and `silo site start --keys` joins with its kit and installs its signing key."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.manifest import read_manifest
from silo.flower_connection import FlowerConnection
from silo.flower_processes import flower_env, free_port, kill_children_of
from silo.local_federation import LocalFederation
from tests.integration.conftest import RECORDS, make_layout

pytestmark = pytest.mark.integration

SILO = [sys.executable, "-m", "silo"]


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_coordinator_and_site_commands_run_tls_with_registered_keys(tmp_path: Path, federation_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=1, sites=1)
    port, fleet_port, site_port = free_port(), free_port(), free_port()
    env = flower_env(tmp_path / "flwr-home")
    argv = [*SILO, "coordinator", "start", "--port", str(port), "--keys", str(layout.keys / "coordinator")]
    argv += ["--database", str(tmp_path / "superlink.db")]
    argv += ["--fleet-host", "127.0.0.1", "--fleet-port", str(fleet_port)]
    coordinator = _start(argv, tmp_path / "coordinator.log", env)
    site = None
    try:
        deadline = time.monotonic() + 90
        # The Fleet proxy is the last thing the coordinator starts.
        while "Fleet proxy (nginx) on" not in (tmp_path / "coordinator.log").read_text():
            assert coordinator.poll() is None and time.monotonic() < deadline, (
                tmp_path / "coordinator.log"
            ).read_text()
            time.sleep(0.3)
        assert "site site-0: SuperNode key registered" in (tmp_path / "coordinator.log").read_text()
        state = layout.site_dir("site-0") / "state"
        assert not (state / "site_signing.key").exists()

        site_argv = [*SILO, "site", "start", "--config", str(sites[0]), "--superlink", f"127.0.0.1:{fleet_port}"]
        site_argv += ["--keys", str(layout.keys / "sites" / "site-0"), "--port", str(site_port)]
        site = _start(site_argv, tmp_path / "site.log", env)
        conn = FlowerConnection(
            tmp_path / "cli",
            f"127.0.0.1:{port}",
            insecure=False,
            root_certificates=layout.keys / "coordinator" / "ca.pem",
        )
        nodes: list[dict] = []
        while time.monotonic() < deadline + 60:
            nodes = json.loads(conn.flwr("supernode", "list", "--format", "json").stdout).get("nodes", [])
            if nodes and nodes[0]["status"] == "online":
                break
            assert site.poll() is None, (tmp_path / "site.log").read_text()
            time.sleep(0.5)
        assert [n["status"] for n in nodes] == ["online"], nodes
        # The kit's signing key was installed where the site signs with it.
        assert (state / "site_signing.key").read_bytes() == (layout.keys / "sites/site-0/site_signing.key").read_bytes()
    finally:
        for proc in (site, coordinator):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
        kill_children_of(port)
        kill_children_of(site_port)


def _wait_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while text not in (shown := path.read_text(errors="replace")):
        assert proc.poll() is None and time.monotonic() < deadline, shown
        time.sleep(0.5)
    return shown


@pytest.mark.slow
def test_federation_run_control_live_view_and_stop_on_interrupt(tmp_path: Path, federation_model_dir: Path) -> None:
    """`silo federation run` shows each site's state and ε as replies arrive and both run ids; status, list
    and logs answer over the Control API; Ctrl-C with --stop-on-interrupt stops the run at the SuperLink
    (it would otherwise go on spending the sites' ε) and says so."""
    # The run must still be going after round 1's replies and three Control API calls (~30 s on 2 cores): 5
    # rounds of the default 120 records end ~25 s after round 1 on a quiet machine. 8 rounds of 480 records a
    # site (~4x the training a round) cannot; 8 is about the most a demo site's ε=8 covers, its evaluation
    # answers included.
    layout, sites = make_layout(tmp_path, federation_model_dir, rounds=8, sites=2, records=4 * RECORDS)
    env = flower_env(tmp_path / "flwr-home")
    with LocalFederation(tmp_path / "procs", sites, keys=layout.keys) as fed:
        access = ["--superlink", fed.address, "--keys", str(layout.keys / "coordinator")]
        run_dir = tmp_path / "runs" / "r1"
        log = tmp_path / "federation-run.log"
        run_args = ["--config", str(layout.federation_config), "--run-dir", str(run_dir), "--stop-on-interrupt"]
        follow = _start([*SILO, "federation", "run", *run_args, *access], log, env)
        try:
            shown = _wait_text(log, "replied to train round 1; ε", follow)
            flower_id = read_manifest(run_dir).flower_run_ids[-1]
            assert re.search(rf"Silo run [0-9a-f]+ in {re.escape(str(run_dir))} is Flower run {flower_id}", shown)
            assert "site-0 (node" in shown and "asked: train round 1" in shown

            def silo(*argv: str) -> str:
                command = [*SILO, "federation", *argv, *access]
                out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
                assert out.returncode == 0, out.stderr
                return out.stdout

            status = silo("status", "--run-dir", str(run_dir))
            assert f"Flower run {flower_id}: running" in status and "Silo run" in status
            assert "manifest: running" in status
            listed = silo("list", "--runs", str(run_dir.parent))
            assert f"Flower run {flower_id}: running" in listed and f"in {run_dir}" in listed
            assert "[silo]" in silo("logs", "--run-id", str(flower_id))

            os.kill(follow.pid, signal.SIGINT)  # the operator's Ctrl-C
            code = follow.wait(timeout=120)
            said = log.read_text()
            assert code == 130, said
            assert f"stopped Flower run {flower_id} at the SuperLink" in said, said
            status = fed.connection.run_status(flower_id)
            assert status["status"] == "finished:stopped", status
        finally:
            if follow.poll() is None:
                os.killpg(follow.pid, signal.SIGKILL)
                follow.wait(timeout=30)
