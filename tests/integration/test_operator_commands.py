"""The operator's path with real processes: `silo coordinator start --keys` registers the sites'
SuperNode keys over TLS, and `silo site start --keys` joins with its kit and installs its signing key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silo.launch import FlowerConnection, flower_env, free_port, kill_children_of
from tests.integration.conftest import make_layout

pytestmark = pytest.mark.integration

SILO = [sys.executable, "-m", "silo"]


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_coordinator_and_site_commands_run_tls_with_registered_keys(tmp_path: Path, base_model_dir: Path) -> None:
    layout, sites = make_layout(tmp_path, base_model_dir, rounds=1, sites=1)
    port, fleet_port, site_port = free_port(), free_port(), free_port()
    env = flower_env(tmp_path / "flwr-home")
    coordinator = _start(
        [*SILO, "coordinator", "start", "--port", str(port), "--keys", str(layout.keys / "coordinator"),
         "--database", str(tmp_path / "superlink.db"), "--fleet-host", "127.0.0.1", "--fleet-port", str(fleet_port)],
        tmp_path / "coordinator.log", env,
    )  # fmt: skip
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

        site = _start(
            [*SILO, "site", "start", "--config", str(sites[0]), "--superlink", f"127.0.0.1:{fleet_port}",
             "--keys", str(layout.keys / "sites" / "site-0"), "--port", str(site_port)],
            tmp_path / "site.log", env,
        )  # fmt: skip
        conn = FlowerConnection(tmp_path / "cli", f"127.0.0.1:{port}", insecure=False,
                                root_certificates=layout.keys / "coordinator" / "ca.pem")  # fmt: skip
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
