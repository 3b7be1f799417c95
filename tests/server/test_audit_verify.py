"""`silo audit verify`: every kind of tampering with the run or the ledgers is caught and named (exit 9)."""

import json
import shutil

import pytest

from common import keys
from common.errors import VerificationFailed
from server.audit import read_ledger_file
from server.audit_verify import _check_independent_epsilon
from silo.cli import main
from tests.server.audit_run import SITES, make_audit_run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_audit_run(tmp_path_factory.mktemp("audit-template"))


@pytest.fixture
def run(template, tmp_path):
    """A private copy of the template run (tests tamper with it)."""
    shutil.copytree(template.root, tmp_path / "r")
    moved = lambda p: tmp_path / "r" / p.relative_to(template.root)  # noqa: E731
    template_copy = type(template)(
        root=tmp_path / "r", run_dir=moved(template.run_dir), exports={s: moved(p) for s, p in template.exports.items()},
        public_keys={s: moved(p) for s, p in template.public_keys.items()}, signing_keys=template.signing_keys,
    )  # fmt: skip
    return template_copy


def verify(run, capsys, *extra):
    code = main(["audit", "verify", str(run.run_dir), *run.ledger_args(), *run.key_args(), *extra])
    return code, capsys.readouterr()


def ledger_lines(run, site="hospital-a"):
    path = run.exports[site] / "ledger.jsonl"
    return path, path.read_bytes().splitlines(keepends=True)


def test_audit_verify_passes_an_untouched_run(run, capsys):
    code, out = verify(run, capsys)
    assert code == 0, out.err
    assert "checks passed" in out.out
    assert "recomputed with dp-accounting" in out.out


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("edit", "entry 1"),
        ("delete", "entry 1"),
        ("reorder", "entry 1"),
        ("insert", "entry 2"),
    ],
)
def test_audit_verify_catches_a_tampered_ledger_entry(run, capsys, tamper, expected):
    path, lines = ledger_lines(run)
    if tamper == "edit":
        lines[1] = lines[1].replace(b'"steps":100', b'"steps":10')
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(2, lines[1])
    path.write_bytes(b"".join(lines))
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "hospital-a" in out.err and expected in out.err


def test_audit_verify_catches_a_changed_epsilon_even_when_re_signed_by_the_site(run, capsys):
    path, lines = ledger_lines(run)
    entry = json.loads(lines[3])
    entry["epsilon_total"] = entry["epsilon_total"] / 2  # the key holder understating its spend
    unsigned = {k: v for k, v in entry.items() if k != "signature"}
    canonical = lambda e: json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()  # noqa: E731
    entry["signature"] = keys.sign(run.signing_keys["hospital-a"], canonical(unsigned)).hex()
    lines[3] = canonical(entry) + b"\n"
    path.write_bytes(b"".join(lines))
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "epsilon_total" in out.err and "entry 3" in out.err


def test_audit_verify_independent_accountant_catches_a_changed_epsilon(run):
    entries = read_ledger_file(run.exports["bank-c"]).entries
    assert _check_independent_epsilon("bank-c", entries)[0].ok
    entries[2]["epsilon_total"] *= 1.05  # beyond the 1e-2 relative tolerance
    check = _check_independent_epsilon("bank-c", entries)[0]
    assert not check.ok and "entry 2: epsilon_total" in check.detail and "dp-accounting" in check.detail


def test_audit_verify_catches_a_changed_epsilon_in_the_manifest(run, capsys):
    manifest_path = run.run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["rounds"][2]["sites"][1]["privacy"]["epsilon_total"] = 0.5
    manifest_path.write_text(json.dumps(manifest))
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "round 2 site bank-c" in out.err and "epsilon_total" in out.err


def test_audit_verify_catches_a_swapped_adapter_file(run, capsys):
    one, two = (run.run_dir / "rounds" / str(n) / "adapter_model.safetensors" for n in (1, 2))
    data_one, data_two = one.read_bytes(), two.read_bytes()
    one.write_bytes(data_two)
    two.write_bytes(data_one)
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "round 1 adapter" in out.err and "sha256" in out.err


def test_audit_verify_catches_a_wrong_public_key(run, capsys, tmp_path):
    wrong = keys.save_public_key(keys.generate_signing_key(), tmp_path / "wrong.pub")
    run.public_keys["hospital-a"] = wrong
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "hospital-a" in out.err and "--public-key" in out.err


def test_audit_verify_catches_a_ledger_truncated_at_its_tail(run, capsys):
    path, lines = ledger_lines(run, "bank-c")
    path.write_bytes(b"".join(lines[:-1]))  # the last round's record removed: the file alone cannot tell
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "round 2 site bank-c" in out.err and "no round entry" in out.err


def test_audit_verify_catches_an_update_hash_the_site_never_recorded(run, capsys):
    manifest_path = run.run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["rounds"][1]["sites"][0]["update_sha256"] = "ee" * 32
    manifest_path.write_text(json.dumps(manifest))
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert "round 1 site hospital-a" in out.err and "update sha256" in out.err


def test_audit_verify_without_ledgers_still_checks_adapters_and_declared_epsilon(run, capsys):
    code = main(["audit", "verify", str(run.run_dir)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert all(f"site {s}: no ledger given" in out.out for s in SITES)
