"""`silo audit report`: the HTML/JSON/Markdown report states what an auditor needs, from public files only."""

import json
import shutil

from server.audit_ledgers import VOID_EPSILON
from silo.cli import main


def test_audit_report_states_method_hashes_budgets_scrub_and_rejections(audit_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["audit", "report", str(audit_run.run_dir), *audit_run.ledger_args(), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((audit_run.run_dir / "manifest.json").read_text())

    method = report["method"]
    assert method["accountant"] == ["rdp"] and method["epsilon_conversion"] == ["balle2020"]
    assert method["delta"] == [1e-5] and method["sampling"] == ["poisson"]
    assert method["secagg"] == "off" and method["central_dp"] == "off"
    assert report["run"]["config_hash"] == manifest["config_hash"]
    assert report["run"]["code_version"] == "test"
    assert [r["adapter_sha256"] for r in report["rounds"]] == [r["adapter_sha256"] for r in manifest["rounds"]]
    for site in audit_run.sites:
        rows = report["sites"][site]["rounds"]
        assert [r["source"] for r in rows] == ["ledger", "ledger"]
        assert rows[0]["epsilon_total"] < rows[1]["epsilon_total"] < report["sites"][site]["budget_epsilon"]
    assert report["scrub_totals"]["entities"] == {"PERSON": 81, "EMAIL_ADDRESS": 24}
    assert report["rejected"] == [
        {"round": 2, "node_id": 300, "site_id": None, "reason": "UpdateRejected: update norm 41.2 > max_update_norm 10"}
    ]

    page = (out / "report.html").read_text()
    assert page.count('<img class="plot"') == 4 and 'src="http' not in page and "<script" not in page
    for text in (
        "rdp",
        "balle2020",
        "poisson",
        manifest["config_hash"],
        manifest["rounds"][2]["adapter_sha256"],
        "max_update_norm",
    ):
        assert text in page
    summary = (out / "summary.md").read_text()
    assert "SecAgg off" in summary and manifest["rounds"][1]["adapter_sha256"] in summary


def test_audit_report_shows_central_dp_and_secagg_from_the_manifest(audit_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(audit_run.run_dir, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"]["central_dp"] = {"enabled": True, "noise_multiplier": 0.8, "clip": 1.0}
    manifest["config"]["security"] = {"secagg": True}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert main(["audit", "report", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    method = json.loads((tmp_path / "out" / "report.json").read_text())["method"]
    assert method["secagg"] == "on"
    assert method["central_dp"] == {"enabled": True, "noise_multiplier": 0.8, "clip": 1.0}


def test_audit_report_and_verify_need_only_the_run_exported_ledgers_and_public_keys(audit_run, tmp_path, capsys):
    """Read-only by design: copy exactly the public files an auditor receives, nothing else."""
    auditor = tmp_path / "auditor"
    src = audit_run.run_dir
    for path in [
        src / "manifest.json",
        *src.glob("rounds/*/adapter_model.safetensors"),
        *src.glob("final/adapter_model.safetensors"),
    ]:
        target = auditor / "run" / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    ledger_args, key_args = [], []
    for site in audit_run.sites:
        shutil.copyfile(audit_run.exports[site] / "ledger.jsonl", auditor / f"{site}.jsonl")
        shutil.copyfile(audit_run.public_keys[site], auditor / f"{site}.pub")
        ledger_args += ["--ledger", str(auditor / f"{site}.jsonl")]
        key_args += ["--public-key", str(auditor / f"{site}.pub")]
    files = sorted(p.relative_to(auditor).as_posix() for p in auditor.rglob("*") if p.is_file())
    assert not any(p.endswith((".key", ".pem")) or "records" in p for p in files)

    before = {p: p.read_bytes() for p in auditor.rglob("*") if p.is_file()}
    assert main(["audit", "verify", str(auditor / "run"), *ledger_args, *key_args]) == 0, capsys.readouterr().err
    assert main(["audit", "report", str(auditor / "run"), *ledger_args, "--out", str(tmp_path / "report")]) == 0
    assert {p: p.read_bytes() for p in auditor.rglob("*") if p.is_file()} == before  # nothing written or changed
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000


def test_audit_report_shows_void_epsilon_claims_and_ledger_regressions(audit_run, tmp_path):
    audit_run.rewrite_ledger(
        "bank-c",
        lambda e: {**{k: v for k, v in e.items() if k not in ("noise_source", "phase", "distributed")}, "format": 1},
    )
    manifest = audit_run.manifest()
    regression = {
        "site_id": "hospital-a",
        "ledger_index": 1,
        "previous_ledger_index": 7,
        "previous_run_id": "0123abcd",
        "previous_round": 3,
    }
    manifest["rounds"][2]["ledger_regressions"] = [regression]
    audit_run.write_manifest(manifest)
    out = tmp_path / "report"
    assert main(["audit", "report", str(audit_run.run_dir), *audit_run.ledger_args(), "--out", str(out)]) == 0

    findings = json.loads((out / "report.json").read_text())["findings"]
    assert [(v["site_id"], v["index"]) for v in findings["void_epsilon"]] == [("bank-c", 1), ("bank-c", 3)]
    assert all("records no noise source (ledger format 1)" in v["reason"] for v in findings["void_epsilon"])
    assert [(g["round"], g["site_id"], g["previous_ledger_index"]) for g in findings["ledger_regressions"]] == [
        (2, "hospital-a", 7)
    ]
    page = (out / "report.html").read_text()
    assert VOID_EPSILON in page and 'id="ledger-regressions"' in page and "not above 7" in page
    summary = (out / "summary.md").read_text()
    assert VOID_EPSILON in summary and "site bank-c entry 3" in summary and "ledger head went backwards" in summary


def test_audit_report_without_findings_says_so(audit_run, tmp_path):
    out = tmp_path / "report"
    assert main(["audit", "report", str(audit_run.run_dir), *audit_run.ledger_args(), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["findings"] == {
        "void_epsilon": [],
        "ledger_regressions": [],
        "ledger_restarts": [],
    }
    page = (out / "report.html").read_text()
    assert VOID_EPSILON not in page and "No void ε claim" in page


def test_audit_report_on_a_malformed_manifest_is_one_line(audit_run, tmp_path, capsys):
    audit_run.write_manifest({"rounds": [{}]})
    assert main(["audit", "report", str(audit_run.run_dir), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "manifest" in err
