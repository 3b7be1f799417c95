"""The audit report tells the whole story (server/audit.py, server/report_verdict.py): its first line
says whether it was verified, when and with what; a failed run says why and in which round; every
rejected update is counted and listed with its reason; the base model's hash is shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common import keys
from common.manifest import read_manifest
from silo.cli import main

BASE_SHA = "ab" * 32


def report(run, capsys, tmp_path: Path, *, keys: bool = True) -> tuple[str, str, dict]:
    out = tmp_path / "report"
    args = [
        "audit",
        "report",
        str(run.run_dir),
        *run.ledger_args(),
        *(run.key_args() if keys else []),
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    md = (out / "summary.md").read_text()
    html = (out / "report.html").read_text()
    body = html.split("<body>", 1)[1].lstrip()
    assert body.startswith('<p id="verdict"'), body[:200]  # the verdict is the page's first line
    assert md.splitlines()[0] in printed
    return md, body, json.loads((out / "report.json").read_text())


def test_report_verified_with_keys_says_so_first(audit_run, capsys, tmp_path):
    md, body, data = report(audit_run, capsys, tmp_path)
    first = md.splitlines()[0]
    assert first.startswith("Verified 20") and "UTC" in first, first
    assert "2 site key(s)" in first and "2 ledger(s)" in first
    assert data["verification"]["status"] == "verified"
    assert {k["path"] for k in data["verification"]["keys"]} == {str(p) for p in audit_run.public_keys.values()}
    # The fingerprints `silo ledger export` prints, so the auditor can match them.
    assert {k["fingerprint"] for k in data["verification"]["keys"]} == {
        keys.fingerprint(keys.load_public_key(p)) for p in audit_run.public_keys.values()
    }
    assert 'class="ok">Verified' in body.split("\n", 1)[0]


def test_report_without_keys_says_not_verified(audit_run, capsys, tmp_path):
    md, body, data = report(audit_run, capsys, tmp_path, keys=False)
    assert md.startswith("NOT VERIFIED: no site public keys were given")
    assert data["verification"]["status"] == "not verified"
    assert 'class="bad">NOT VERIFIED' in body.split("\n", 1)[0]


def test_report_over_a_tampered_ledger_says_failed_and_names_it(audit_run, capsys, tmp_path):
    path = audit_run.exported_ledger("hospital-a")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))  # two entries swapped
    md, _, data = report(audit_run, capsys, tmp_path)
    assert md.startswith("NOT VERIFIED 20"), md.splitlines()[0]
    assert "failed: ledger" in md.splitlines()[0]
    assert data["verification"]["status"] == "failed"


def test_report_of_a_run_whose_every_update_was_rejected_counts_them(audit_run, capsys, tmp_path):
    """The run failed in round 1: no round entry was written for it, its rejections are in failed_round."""
    manifest = audit_run.manifest()
    manifest["rounds"] = manifest["rounds"][:1]
    manifest["completed_rounds"], manifest["status"] = 0, "failed"
    reasons = ["signature does not verify against the registry", "update-sha256 does not match the arrays"]
    manifest["failure"] = "round 1: 0 usable update(s), `min_sites` is 2"
    manifest["failed_round"] = {
        "round": 1,
        "rejected": [
            {"node_id": 11, "site_id": "hospital-a", "reason": reasons[0]},
            {"node_id": 12, "site_id": "bank-c", "reason": reasons[1]},
        ],
    }
    manifest["base_model_sha256"] = BASE_SHA
    audit_run.write_manifest(manifest)
    read_manifest(audit_run.run_dir)  # what the test wrote is a valid manifest
    for n in ("1", "2"):
        shutil.rmtree(audit_run.run_dir / "rounds" / n)
    shutil.rmtree(audit_run.run_dir / "final")

    md, body, data = report(audit_run, capsys, tmp_path, keys=False)
    assert len(data["rejected"]) == 2
    assert "updates rejected: 2" in md
    for reason in reasons:
        assert reason in md and reason in body
    assert "the run failed in round 1:** round 1: 0 usable update(s)" in md
    assert 'id="failure">The run failed in round 1: round 1: 0 usable' in body
    assert BASE_SHA in md and BASE_SHA in body
