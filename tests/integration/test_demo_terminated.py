"""`silo demo` stopped by SIGTERM (a service manager, `timeout`, `kill`) stops its whole federation.

The SuperLink, the SuperNodes and the site runtimes run in their own process groups, so a signal to the
demo does not reach them: before SIGTERM was handled, they went on training (and spending the sites' ε)
with nobody collecting the rounds. Real processes over real sockets; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silo.cli import INTERRUPTED

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _processes_naming(marker: str) -> list[str]:
    """Command lines of the live processes (not zombies) whose arguments mention `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(f"{pid}: {cmdline[:160]}")
    return found


def test_sigterm_stops_the_demo_and_every_process_it_started(tmp_path: Path) -> None:
    out = tmp_path / "demo-terminated"
    log = tmp_path / "demo.log"
    with log.open("wb") as fh:
        demo = subprocess.Popen(
            [sys.executable, "-m", "silo", "demo", "--out", str(out), "--sites", "2", "--records", "40"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "is Flower run" not in log.read_text(errors="replace"):  # the run is under way at the sites
            assert demo.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        assert len(_processes_naming(str(out))) >= 3  # the SuperLink and both site nodes are up

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=90) == INTERRUPTED, log.read_text(errors="replace")[-3000:]
        assert "interrupted" in log.read_text(errors="replace")
        left: list[str] = []
        for _ in range(40):  # processes reparented to init are reaped a moment later
            left = _processes_naming(str(out))
            if not left:
                break
            time.sleep(0.25)
        assert not left, "\n".join(left)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for line in _processes_naming(str(out)):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
