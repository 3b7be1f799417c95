import json
import math
import re
import stat

import pytest

from client.ledger import Ledger
from common import keys
from silo.cli import main


@pytest.fixture
def site(tmp_path):
    """A site with a signing key (made by `silo ledger keygen`) and a ledger of two runs."""
    assert main(["ledger", "keygen", "--out", str(tmp_path / "site.pem")]) == 0
    key = keys.load_private_key(tmp_path / "site.pem")
    ledger_path = tmp_path / "ledger.jsonl"
    with Ledger.open(ledger_path, signing_key=key, create=True) as ledger:
        for run_id in ("run-a", "run-b"):
            for r in range(2):
                plan = ledger.plan_round(
                    noise_multiplier=1.1,
                    sample_rate=0.01,
                    steps=100,
                    delta=1e-5,
                    accountant="rdp",
                    budget_epsilon=3.0,
                    budget_delta=1e-5,
                    run_id=run_id,
                    round=r,
                    site_id="site-a",
                )
                ledger.record_round(
                    plan,
                    run_id=run_id,
                    round=r,
                    site_id="site-a",
                    max_grad_norm=1.0,
                    dataset_size=1000,
                    update_sha256="cd" * 32,
                )
    return {"dir": tmp_path, "ledger": str(ledger_path), "pub": str(tmp_path / "site.pem.pub")}


def test_cli_ledger_keygen_writes_a_private_key_only_the_owner_can_read(site):
    mode = stat.S_IMODE((site["dir"] / "site.pem").stat().st_mode)
    assert mode == 0o600
    assert keys.fingerprint(keys.load_public_key(site["pub"])) == keys.fingerprint(
        keys.load_private_key(site["dir"] / "site.pem")
    )


def test_cli_ledger_keygen_refuses_to_overwrite(site, capsys):
    assert main(["ledger", "keygen", "--out", str(site["dir"] / "site.pem")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli_ledger_verify_accepts_an_intact_ledger(site, capsys):
    assert main(["ledger", "verify", "--ledger", site["ledger"], "--public-key", site["pub"]]) == 0
    assert "ledger OK: 8 entries" in capsys.readouterr().out


def test_cli_ledger_verify_names_the_first_bad_entry(site, capsys):
    path = site["dir"] / "ledger.jsonl"
    rows = path.read_bytes().splitlines(keepends=True)
    rows[5] = rows[5].replace(b'"noise_multiplier":1.1', b'"noise_multiplier":1.2')
    path.write_bytes(b"".join(rows))
    assert main(["ledger", "verify", "--ledger", site["ledger"], "--public-key", site["pub"]]) == 6
    err = capsys.readouterr().err
    assert "INVALID at entry 5" in err and "signature invalid" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_cli_ledger_verify_rejects_another_sites_key(site, tmp_path, capsys):
    other = keys.save_public_key(keys.generate_signing_key(), tmp_path / "other.pub")
    assert main(["ledger", "verify", "--ledger", site["ledger"], "--public-key", str(other)]) == 6
    assert "entry 0" in capsys.readouterr().err


def test_cli_ledger_verify_json(site, capsys):
    assert main(["ledger", "verify", "--ledger", site["ledger"], "--public-key", site["pub"], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["first_bad_index"] is None


def test_cli_ledger_export_writes_an_audit_directory(site, capsys):
    out = site["dir"] / "audit"
    assert main(["ledger", "export", "--ledger", site["ledger"], "--out", str(out)]) == 0
    assert "exported 8 entries" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["ledger.jsonl", "manifest.json", "site_public_key.pem"]
    assert main(["ledger", "verify", "--ledger", str(out / "ledger.jsonl"), "--public-key", site["pub"]]) == 0


BUDGET_COLUMNS = ["entry", "run", "round", "status", "sigma", "q", "steps", "eps added", "eps total", "budget", "left"]


def _cells(line: str) -> list[str]:
    """A row of the budget table (a Rich table: cells between vertical rules), its cells stripped."""
    return [cell.strip() for cell in re.split(r"[│┃|]", line)]


def test_cli_budget_shows_spent_and_remaining_per_run_and_round(site, capsys):
    assert main(["budget", "--ledger", site["ledger"], "--public-key", site["pub"]]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "eps added" in line)
    assert _cells(lines[header]) == BUDGET_COLUMNS  # every column, in order, on one line
    rows = [dict(zip(BUDGET_COLUMNS, _cells(line), strict=True)) for line in lines[header + 2 : header + 6]]
    assert [(r["entry"], r["run"], r["round"], r["status"]) for r in rows] == [
        ("1", "run-a", "0", "recorded"),
        ("3", "run-a", "1", "recorded"),
        ("5", "run-b", "0", "recorded"),
        ("7", "run-b", "1", "recorded"),
    ]
    assert all((r["sigma"], r["q"], r["steps"], r["budget"]) == ("1.1", "0.01", "100", "3.0000") for r in rows)
    assert (rows[-1]["eps total"], rows[-1]["left"]) == ("1.2368", "1.7632")
    assert sum(float(r["eps added"]) for r in rows) == pytest.approx(1.2368, abs=5e-4)
    for r in rows:
        assert float(r["left"]) == pytest.approx(3.0 - float(r["eps total"]), abs=1e-4)
    assert "run-a: rounds 2" in out and "run-b: rounds 2" in out
    assert "spent epsilon 1.2368 of budget 3.0000" in out
    fit = re.search(r"rounds like the last that still fit: (\d+)\. Signatures verified against --public-key\.", out)
    assert fit is not None, out
    assert main(["budget", "--ledger", site["ledger"], "--json"]) == 0
    assert int(fit.group(1)) == json.loads(capsys.readouterr().out)["spent"]["rounds_that_fit"]


def test_cli_budget_added_column_sums_to_the_total_and_rounds_that_fit_are_exact(site, capsys):
    """Each row's increment adds up to the ledger's total (a round's own ε would overcount: composition is
    sub-additive), and 'rounds that fit' is the largest k whose composition stays within the budget."""
    from common.accounting import Accountant, EpsilonConversion, compute_epsilon

    assert main(["budget", "--ledger", site["ledger"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows, spent = report["rounds"], report["spent"]
    assert sum(r["epsilon_added"] for r in rows) == pytest.approx(spent["epsilon"])
    assert sum(r["epsilon_round"] for r in rows) > spent["epsilon"] * 1.5  # what the old column invited
    k = spent["rounds_that_fit"]
    assert k > 0
    event = (1.1, 0.01, 100)  # every round of the fixture

    def total(n: int) -> float:
        return compute_epsilon(
            [event] * n, delta=1e-5, accountant=Accountant.RDP, conversion=EpsilonConversion.BALLE2020
        )

    assert total(len(rows) + k) <= 3.0 < total(len(rows) + k + 1)


def test_cli_budget_json_is_strict_and_composes_runs(site, capsys):
    assert main(["budget", "--ledger", site["ledger"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(name))
    assert [r["round"] for r in report["rounds"]] == [0, 1, 0, 1]
    runs = {run["run_id"]: run for run in report["runs"]}
    assert runs["run-a"]["epsilon_run"] == pytest.approx(runs["run-b"]["epsilon_run"])
    assert runs["run-b"]["epsilon_total_after"] > runs["run-b"]["epsilon_run"]
    assert report["spent"]["remaining"] == pytest.approx(3.0 - report["spent"]["epsilon"])


def test_cli_budget_shows_a_site_without_dp_as_infinite(tmp_path, capsys):
    key = keys.generate_signing_key()
    with Ledger.open(tmp_path / "ledger.jsonl", signing_key=key, create=True) as ledger:
        plan = ledger.plan_round(
            noise_multiplier=0.0,
            sample_rate=0.01,
            steps=100,
            delta=1e-5,
            accountant="rdp",
            budget_epsilon=math.inf,
            budget_delta=1e-5,
            dp_enabled=False,
        )
        ledger.record_round(
            plan, run_id="r", round=0, site_id="s", max_grad_norm=None, dataset_size=10, update_sha256="ef" * 32
        )
    assert main(["budget", "--ledger", str(tmp_path / "ledger.jsonl"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spent"]["epsilon"] == "inf" and report["rounds"][0]["dp_enabled"] is False


def test_cli_budget_refuses_a_tampered_ledger(site, capsys):
    path = site["dir"] / "ledger.jsonl"
    rows = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(rows[:2] + rows[3:]))
    assert main(["budget", "--ledger", site["ledger"]]) == 6
    assert "INVALID at entry 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["budget", "--help"], ("--ledger", "--public-key", "examples:")),
        (["ledger", "--help"], ("verify", "export", "keygen", "restart", "examples:")),
        (["ledger", "verify", "--help"], ("--ledger", "--public-key")),
    ],
)
def test_cli_ledger_help_explains_usage(argv, expected, capsys):
    assert main(argv) == 0  # --help is not an error
    out = capsys.readouterr().out
    assert [word for word in expected if word not in out] == []
