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
    os.makedirs(os.environ.get("SILO_SCREENSHOT_DIR", tmp_path), exist_ok=True)
    shutil.copyfile(shot, os.path.join(os.environ.get("SILO_SCREENSHOT_DIR", tmp_path), "audit-report.png"))
