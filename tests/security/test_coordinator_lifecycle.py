"""`silo coordinator start` as an operator runs it: the SuperLink on loopback and the nginx Fleet proxy
start together, stop together on SIGTERM, and the death of either one stops the other."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from silo.flower_processes import flower_env, free_port
from silo.keygen import create_keys

pytestmark = pytest.mark.integration

READY = "Fleet proxy (nginx) on"


def _status(url: str, ca: Path) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context(cafile=str(ca))) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def _start(tmp_path: Path, port: int, fleet_port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "silo", "coordinator", "start", "--keys", str(tmp_path / "keys" / "coordinator")]
    argv += ["--port", str(port), "--fleet-host", "127.0.0.1", "--fleet-port", str(fleet_port)]
    argv += ["--database", str(tmp_path / "state" / "superlink.db")]
    env = flower_env(tmp_path / "home")
    with log.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while READY not in log.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.3)
    return proc


def _wait(proc: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(log.read_text(errors="replace")) from None


def test_coordinator_starts_and_stops_the_superlink_and_its_proxy_together(
    tmp_path: Path, listening_hosts: Callable[[int], set[str]]
) -> None:
    create_keys(tmp_path / "keys", ["a"])
    ca = tmp_path / "keys" / "coordinator" / "ca.pem"
    port, fleet_port = free_port(), free_port()
    log = tmp_path / "coordinator.log"

    proc = _start(tmp_path, port, fleet_port, log)
    try:
        assert listening_hosts(port) == {"0100007F"}  # the SuperLink: loopback only
        assert _status(f"https://127.0.0.1:{port}/health", ca) == 200
        assert _status(f"https://127.0.0.1:{fleet_port}/health", ca) == 403  # the proxy refuses it
        conf = tmp_path / "state" / "proxy" / "nginx.conf"
        assert conf.stat().st_mode & 0o777 == 0o600 and conf.parent.stat().st_mode & 0o777 == 0o700
        # The proxy dies: the coordinator stops the SuperLink and says why.
        nginx = int((tmp_path / "state" / "proxy" / "nginx.pid").read_text())
        os.kill(nginx, signal.SIGKILL)
        assert _wait(proc, log) == 8
        assert (
            log.read_text()
            .strip()
            .splitlines()[-1]
            .endswith("the Fleet proxy (nginx) exited with code -9; the coordinator stopped")
        )
        assert not listening_hosts(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    # Started again on the same database: the operator's stop ends both, cleanly.
    proc = _start(tmp_path, port, fleet_port, log)
    try:
        assert "SuperNode key already registered" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert _wait(proc, log) == 0
        assert not listening_hosts(port) and not listening_hosts(fleet_port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
