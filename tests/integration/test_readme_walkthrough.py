"""README.md's "Running a real federation" and "Auditing a run", executed as written: the operator's,
two sites' and the auditor's commands, each a real process, on loopback.

The commands are read out of README.md, so the README and this test cannot drift. Only directories,
host names and port numbers are substituted (the test machine is not coord.example, two sites share
it, and other tests may hold the README's ports). `silo audit canaries` trains twice beside the run
and has tests of its own (tests/silo/test_canaries.py); it is the one README command left out here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silo.demo import DemoLayout, write_federation, write_site
from silo.flower_processes import flower_env, free_port, kill_children_of
from silo.synthetic import make_bank_messages, make_clinical_notes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
SILO = [sys.executable, "-m", "silo"]
RECORDS = 120
# The README's two sites in this walkthrough (its keys name a third, hospital-b, which never connects).
SITES = ("hospital-a", "bank-c")
# Seconds for the coordinator to be ready and for a site to connect, on a loaded 2-core machine.
START_TIMEOUT_S = 120.0


def readme_commands(section: str) -> list[str]:
    """The `silo ...` commands of the bash blocks under `## section`, continuation lines joined and
    trailing comments dropped."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [part.split("```", 1)[0] for part in body.split("```bash\n")[1:]]
    lines = (line.split(" # ", 1)[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines())
    return [line for line in lines if line.startswith("silo ")]


def pick(commands: list[str], prefix: str) -> str:
    found = [c for c in commands if c.startswith(prefix)]
    assert len(found) == 1, f"README has {len(found)} `{prefix}` commands: {commands}"
    return found[0]


def localise(command: str, substitutions: dict[str, str]) -> list[str]:
    """argv for `command` with whole-word substitutions (a host, a port, a directory) and `silo` run
    from this interpreter."""
    for old, new in substitutions.items():
        command = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, command)
    argv = shlex.split(command)
    assert argv[0] == "silo"
    return [*SILO, *argv[1:]]


def start(argv: list[str], cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(text: str, log: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} after {START_TIMEOUT_S:.0f}s:\n{log.read_text()}"
        time.sleep(0.3)
    return log.read_text(errors="replace")


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120, logs: tuple[Path, ...] = ()) -> str:
    """Run to the end; on a failure, the message carries the tails of `logs` (the other processes' logs)."""
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        tails = "\n".join(
            f"--- {p}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:]) for p in logs if p.exists()
        )
        pytest.fail(f"{shlex.join(argv)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}\n{tails}")
    return out.stdout + out.stderr


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Ctrl-C, as the operator's terminal sends it; SIGKILL if it does not stop in time (then fails)."""
    os.kill(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        raise


def test_readme_walkthrough_runs_as_written(tmp_path: Path, federation_model_dir: Path) -> None:
    federation = readme_commands("Running a real federation")
    audit = readme_commands("Auditing a run")
    port, fleet_port = free_port(), free_port()
    site_ports = {site: free_port() for site in SITES}
    hosts = {"coord.example": "localhost", "0.0.0.0": "127.0.0.1", "9093": str(port), "9092": str(fleet_port)}
    env = flower_env(tmp_path / "flwr-home")

    # The federation operator's machine: keys, the federation TOML, the coordinator.
    coord = tmp_path / "coordinator"
    coord.mkdir()
    run(localise(pick(federation, "silo keys"), hosts), coord, env)
    write_federation(
        DemoLayout(coord),
        base_model=str(federation_model_dir),
        rounds=1,
        min_sites=len(SITES),
        timeout_s=180,
        registry=Path("keys/coordinator/registry.json"),
    )
    # Each site's machine: its TOML, its records and the kit the operator handed it.
    layout = DemoLayout(tmp_path)
    for site, make, seed in zip(SITES, (make_clinical_notes, make_bank_messages), (21, 22), strict=True):
        write_site(
            layout,
            site,
            [{"text": r.text} for r in make(RECORDS, seed=seed)],
            base_model=str(federation_model_dir),
            rounds=1,
        )
        shutil.copytree(coord / "keys" / "sites" / site, layout.site_dir(site) / "keys" / "sites" / site)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        coordinator = start(
            localise(pick(federation, "silo coordinator start"), hosts), coord, tmp_path / "coordinator.log", env
        )
        procs.append(coordinator)
        shown = wait_for("coordinator ready", tmp_path / "coordinator.log", coordinator)
        assert "list-runs" not in shown  # the SuperLink's own lines are in its log, not on the operator's screen
        assert (coord / "state" / "superlink" / "logs" / "superlink.log").stat().st_size > 0

        for site in SITES:
            site_hosts = {**hosts, "keys/sites/hospital-a": f"keys/sites/{site}", "9094": str(site_ports[site])}
            assert f"site {site}:" in run(
                localise(pick(federation, "silo site check"), site_hosts), layout.site_dir(site), env
            )
            log = tmp_path / f"{site}.log"
            proc = start(localise(pick(federation, "silo site start"), site_hosts), layout.site_dir(site), log, env)
            procs.append(proc)
            shown = wait_for("connected to", log, proc)
            assert re.search(
                rf"site {site}: connected to localhost:{fleet_port} at \S+ as SuperNode \d+ \(key sha256:", shown
            )

        logs = (
            *(layout.site_dir(s) / "state" / "logs" / "node.log" for s in SITES),
            coord / "state" / "superlink" / "logs" / "superlink.log",
        )
        out = run(localise(pick(federation, "silo federation run"), hosts), coord, env, timeout=600, logs=logs)
        assert re.search(r"run \S+ completed: 1 rounds", out), out
        assert re.search(r"Silo run \S+ in \S+ is Flower run \d+", out), out
        assert re.search(
            r"(hospital-a|bank-c) \(node \d+\): replied to train round 1; ε \d+\.\d\d of 10\.00 spent", out
        ), out
        # Run control over the Control API, as the README shows it (stopping is tested on a live run elsewhere).
        status = run(localise(pick(federation, "silo federation status"), hosts), coord, env)
        assert (
            re.search(r"Flower run \d+: finished:completed", status) and "manifest: completed, 1 of 1 rounds" in status
        )
        assert "Silo run" in run(localise(pick(federation, "silo federation list"), hosts), coord, env)
        assert "[silo]" in run(localise(pick(federation, "silo federation logs"), hosts), coord, env)
        assert "silo federation stop" in federation[-1]

        for proc in procs[1:]:
            assert interrupt(proc) == 130
        assert interrupt(coordinator) == 0
        for site in SITES:
            shown = (tmp_path / f"{site}.log").read_text()
            assert f"site {site}: stopped" in shown
            # The site operator's line for the round; Flower's own lines stayed in the node's log.
            assert re.search(
                r"round 1 of run \w+ \(Flower run \d+, app [0-9a-f]{12}\): \d+ records scrubbed, \d+ quarantined; "
                r"ε \+\d+\.\d\d this round .*, total \d+\.\d\d of 10\.00, \d+\.\d\d left; sent update sha256 [0-9a-f]{12}",
                shown,
            ), shown
            assert "Connection attempt" not in shown and "INFO :" not in shown

        # Each site exports its ledger; the auditor receives the exports and the sites' public keys.
        for site in SITES:
            site_dirs = {"audit/hospital-a": f"audit/{site}"}
            run(localise(pick(audit, "silo ledger export"), site_dirs), layout.site_dir(site), env)
            shutil.copytree(layout.site_dir(site) / "audit" / site, coord / "audit" / site)
        run(localise(pick(audit, "silo audit report"), {}), coord, env)
        first_line = (coord / "audit" / "report" / "summary.md").read_text().splitlines()[0]
        assert first_line.startswith("Verified"), first_line
        out = run(localise(pick(audit, "silo audit verify"), {}), coord, env)
        assert "verified" in out.lower(), out
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        kill_children_of(port)
        for site_port in site_ports.values():
            kill_children_of(site_port)
