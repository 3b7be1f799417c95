"""A site's node process (client/runtime/node.py): the executor and its SuperNode live and die together.

A stand-in command takes the SuperNode's place (what is under test is the pairing, not Flower)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silo.flower_processes import free_port


def node(site_toml: Path, *child: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "client.runtime", "--site-config", str(site_toml)]
    argv += ["--runtime-api-address", f"127.0.0.1:{free_port()}", "--no-coordinator-key", "--", *child]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as dead.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _child_pid(parent: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children")
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.1)
    raise AssertionError("the node never started its SuperNode")


def test_node_exits_with_its_supernodes_exit_code(write_site_toml):
    proc = node(write_site_toml(), sys.executable, "-c", "import sys; sys.exit(3)")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "SuperNode exited with code 3" in out


def test_a_supernode_that_ends_itself_once_is_replaced_and_the_node_goes_on(write_site_toml, tmp_path):
    # Flower's SuperNode ends itself when a restarted SuperLink that keeps its state in memory no longer
    # knows its node; the site must join again by itself, not stop until an operator restarts it.
    starts = tmp_path / "starts"
    script = "import sys, time; f = open(sys.argv[1], 'a+'); f.write('x'); f.flush(); f.seek(0)\n"
    script += "time.sleep(0.3 if f.read() == 'x' else 600)"
    proc = node(write_site_toml(), sys.executable, "-c", script, str(starts))
    deadline = time.monotonic() + 60
    while (not starts.exists() or starts.read_text() != "xx") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert starts.exists() and starts.read_text() == "xx", "the node did not start a second SuperNode"
    time.sleep(1.0)
    assert proc.poll() is None, "the node stopped when its SuperNode ended itself once"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert "starting a fresh SuperNode" in out, out
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert starts.read_text() == "xx", "a SuperNode was started after the node was asked to stop"


def test_a_node_asked_to_stop_says_so_instead_of_reporting_the_signal_as_a_supernode_failure(write_site_toml):
    proc = node(write_site_toml(), sys.executable, "-c", "import time; time.sleep(600)")
    _child_pid(proc.pid)
    time.sleep(1.0)  # the executor installs its signal handlers just after starting its SuperNode
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert "asked to stop" in out, out
    assert "exited with code" not in out, out
    assert proc.returncode == 128 + signal.SIGTERM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_supernode_dies_when_the_executor_is_killed(write_site_toml):
    proc = node(write_site_toml(), sys.executable, "-c", "import time; time.sleep(600)")
    child = _child_pid(proc.pid)
    assert _alive(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the SuperNode outlived its executor"


def test_node_with_a_bad_site_config_is_one_line_and_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    (tmp_path / "bad.toml").write_text("[site]\nid = ''\n")
    proc = node(tmp_path / "bad.toml", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert out.startswith("silo: error:") and "site.id" in out and "Traceback" not in out
    assert not marker.exists()


def test_the_supernode_runs_through_silos_wrapper_with_the_same_arguments():
    from client.runtime.flower_io import supernode_command

    argv = ["/venv/bin/flower-supernode", "--superlink", "h:9092", "--isolation", "process"]
    assert supernode_command(argv) == [sys.executable, "-m", "client.runtime.supernode", *argv[1:]]
    other = [sys.executable, "-c", "pass"]
    assert supernode_command(other) == other  # a stand-in command (these tests) runs as given


def test_the_supernodes_waits_are_capped_and_relax_only_after_a_long_idle(monkeypatch):
    import time as real_time

    from client.runtime import flower_io

    slept: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr(real_time, "sleep", slept.append)
    monkeypatch.setattr(real_time, "monotonic", lambda: clock[0])
    capped = flower_io._CappedSleeps(0.2)
    capped.sleep(3)  # an empty pull
    capped.sleep(0.5)  # waiting for the runtime's reply: busy
    clock[0] += flower_io.SUPERNODE_BUSY_S + 1
    capped.sleep(3)  # the first empty pull after the reply: idle starts now
    clock[0] += flower_io.SUPERNODE_BUSY_S + 1
    capped.sleep(3)  # idle for longer than the busy window
    assert slept == [0.2, 0.2, 0.2, flower_io.SUPERNODE_IDLE_SLEEP_S]
    assert capped.monotonic is real_time.monotonic  # everything else is the time module's own


def test_the_supernode_pulls_sooner_while_the_next_message_is_due(monkeypatch):
    """After a reply the coordinator's next message is due: the slowest site, which the round waits for,
    must not wait a whole cap for it; a node still waiting after the window pulls at the cap again."""
    import time as real_time

    from client.runtime import flower_io

    slept: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr(real_time, "sleep", slept.append)
    monkeypatch.setattr(real_time, "monotonic", lambda: clock[0])
    capped = flower_io._CappedSleeps(0.2)
    capped.sleep(3)  # an empty pull before any message: the cap
    capped.sleep(0.5)  # waiting for the runtime's reply
    capped.sleep(3)  # the reply went out: the next message is due
    clock[0] += flower_io.SUPERNODE_DUE_S + 0.1
    capped.sleep(3)  # still nothing after the window
    assert slept == [0.2, 0.2, flower_io.SUPERNODE_DUE_SLEEP_S, 0.2]

    flower = flower_io._CappedSleeps(3.0)  # Flower's own waits (the per-message path, for comparison)
    slept.clear()
    flower.sleep(0.5)
    flower.sleep(3)
    assert slept == [0.5, 3]


def test_the_runtime_stops_on_the_first_signal_and_ignores_the_next(monkeypatch):
    """A second SIGTERM while the runtime shuts down (supervisor and process group) must not interrupt its
    exit handlers, which would print a traceback into the site's log at every stop."""
    import os
    import signal
    import threading

    from client.runtime.worker import STOP_SIGNALS, stop_on_signals

    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stop = threading.Event()
    try:
        stop_on_signals(stop)
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)  # handled as os.kill returns (the main thread)
        assert exited.value.code == 128 + signal.SIGTERM and stop.is_set()
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: nothing raised, the test goes on
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
