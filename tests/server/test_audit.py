"""The audit report as an auditor sees it: rendered by headless Chromium (Debian's `chromium`), with
no console errors and every plot present and non-empty. `make test` installs chromium; under CI a
missing browser fails the test instead of skipping it."""

import base64
import os
import re
import shutil
import subprocess

import pytest

from common.ledger.verify import read_ledger
from server.audit import write_report
from server.audit_ledgers import LedgerFile

# Network and background services off: the report must render from the file alone, fetching nothing.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MIN_PLOT_BYTES = 5_000  # a rendered matplotlib PNG at this size is 20-60 KB; an empty figure ~3 KB


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not installed (`make browser` installs Debian's chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(*args: str, profile) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_report_renders_in_chromium_with_every_plot_and_no_console_error(audit_run, tmp_path):
    ledgers = [LedgerFile(p, read_ledger(p)) for p in map(audit_run.exported_ledger, audit_run.sites)]
    page = write_report(audit_run.run_dir, tmp_path / "report", ledgers)["html"]
    url = page.resolve().as_uri()

    shot = tmp_path / "report.png"
    rendered = run_chromium(
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        url,
        profile=tmp_path / "profile-1",
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    console = [line for line in rendered.stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]
    assert console == []
    assert shot.stat().st_size > 50_000  # a blank 1280x2000 page is ~10 KB

    dom = run_chromium("--dump-dom", url, profile=tmp_path / "profile-2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    plots = re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom.stdout)
    assert len(plots) == 4
    for data in plots:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > MIN_PLOT_BYTES
    assert "Silo audit report" in dom.stdout and "Rounds and adapter hashes" in dom.stdout
    # Two versions on one page, each said whose: the run's (what its ServerApp recorded) and the generator's.
    assert "Code version (the run's ServerApp)" in dom.stdout.replace("&#x27;", "'").replace("&#39;", "'")
    assert "this report's generator" in dom.stdout.replace("&#x27;", "'").replace("&#39;", "'")
    os.makedirs(os.environ.get("SILO_SCREENSHOT_DIR", tmp_path), exist_ok=True)
    shutil.copyfile(shot, os.path.join(os.environ.get("SILO_SCREENSHOT_DIR", tmp_path), "audit-report.png"))


def test_a_sites_total_counts_the_evaluation_answers_after_its_last_round(audit_run, tmp_path):
    """A site answers the final evaluation after its last training round and spends ε on it: the report's
    total and what is left are the ledger's after that answer, not the last round's figure."""
    from client.ledger import Ledger
    from client.ledger_export import export_ledger
    from common.accounting import Accountant, DPEvent
    from server.audit import build_report

    run_id = audit_run.manifest()["run_id"]
    site = audit_run.sites[0]
    with Ledger.open(audit_run.ledgers[site], signing_key=audit_run.signing_keys[site]) as ledger:
        ledger.charge_evaluation(
            DPEvent(2.0, 1.0, 1),
            delta=1e-5,
            accountant=Accountant.RDP,
            budget_epsilon=10.0,
            budget_delta=1e-5,
            dataset_size=24,
            evaluated_sha256="ab" * 32,
            noise_source="os-seeded",
            run_id=run_id,
            round=2,
            site_id=site,
        )
    shutil.rmtree(audit_run.exports[site])
    export_ledger(audit_run.ledgers[site], audit_run.exports[site])
    entries = read_ledger(audit_run.exported_ledger(site))
    assert entries[-1]["kind"] == "evaluation"
    rounds = [e for e in entries if e.get("kind") == "round"]
    assert entries[-1]["epsilon_total"] > rounds[-1]["epsilon_total"]  # the answer spent something

    ledgers = [LedgerFile(p, read_ledger(p)) for p in map(audit_run.exported_ledger, audit_run.sites)]
    shown = build_report(audit_run.run_dir, ledgers)["sites"][site]
    assert shown["epsilon_total"] == pytest.approx(entries[-1]["epsilon_total"], rel=1e-12)
    assert shown["rounds"][-1]["epsilon_total"] == pytest.approx(rounds[-1]["epsilon_total"], rel=1e-12)
