"""`silo audit verify`: every kind of tampering with the run or the ledgers is caught and named (exit 9);
what was not given is named too (exit 10, or 0 with `--partial`); nothing ends in a traceback."""

import hashlib
import json
import shutil

import pytest

from common.errors import AuditIncomplete, ConfigError, VerificationFailed
from server.audit_epsilon import ledger_epsilon_problem
from server.audit_ledgers import VOID_EPSILON
from server.audit_verify import verify_run
from silo.cli import main

VOID = VOID_EPSILON


def verify(run, capsys, *extra, ledgers=True, public_keys=True):
    args = [*(run.ledger_args() if ledgers else []), *(run.key_args() if public_keys else [])]
    code = main(["audit", "verify", str(run.run_dir), *args, *extra])
    return code, capsys.readouterr()


def one_line_error(out) -> bool:
    return out.err.count("\n") == 1 and "Traceback" not in out.err


def ledger_lines(run, site="hospital-a"):
    path = run.exported_ledger(site)
    return path, path.read_bytes().splitlines(keepends=True)


def test_audit_verify_passes_an_untouched_run_only_when_every_check_ran(audit_run, capsys):
    code, out = verify(audit_run, capsys)
    assert code == 0, out.err
    assert "checks passed" in out.out and "PARTIAL" not in out.out and "NOT CHECKED" not in out.out
    assert "recomputed with dp-accounting" in out.out
    assert "OK   fresh noise: 4 round entries" in out.out
    assert "FAIL" not in out.out


# ---- the ledgers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [("edit", "entry 1"), ("delete", "entry 1"), ("reorder", "entry 1"), ("insert", "entry 2")],
)
def test_audit_verify_catches_a_tampered_ledger_entry(audit_run, capsys, tamper, expected):
    path, lines = ledger_lines(audit_run)
    if tamper == "edit":
        lines[1] = lines[1].replace(b'"steps":100', b'"steps":10')
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(2, lines[1])
    path.write_bytes(b"".join(lines))
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert "hospital-a" in out.err and expected in out.err and one_line_error(out)


def test_audit_verify_catches_a_changed_epsilon_even_when_re_signed_by_the_site(audit_run, capsys):
    def understate(entry):
        if entry["index"] == 3:
            entry["epsilon_total"] = entry["epsilon_total"] / 2  # the key holder understating its spend
        return entry

    audit_run.rewrite_ledger("hospital-a", understate)
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert "epsilon_total" in out.err and "entry 3" in out.err


def test_audit_verify_independent_accountant_catches_a_changed_epsilon(audit_run):
    entries = [json.loads(line) for line in audit_run.exported_ledger("bank-c").read_text().splitlines()]
    assert ledger_epsilon_problem(entries)[0] is None
    entries[2]["epsilon_total"] *= 1.05  # beyond the 1e-2 relative tolerance
    problem, _ = ledger_epsilon_problem(entries)
    assert problem is not None and "entry 2: epsilon_total" in problem and "dp-accounting" in problem


def test_audit_verify_catches_a_ledger_truncated_at_its_tail(audit_run, capsys):
    path, lines = ledger_lines(audit_run, "bank-c")
    path.write_bytes(b"".join(lines[:-1]))  # the last round's record removed: the file alone cannot tell
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert "site bank-c" in out.err and "round 2" in out.err and "no round entry" in out.err


def test_audit_verify_names_a_ledger_that_is_not_a_ledger_in_one_line(audit_run, capsys):
    path, lines = ledger_lines(audit_run, "bank-c")
    path.write_bytes(b"".join(lines) + b'{"kind": "round"\n')
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code and one_line_error(out)
    assert "entry 4" in out.err and "not valid JSON" in out.err


def test_audit_verify_catches_a_ledger_round_the_manifest_does_not_have(audit_run, capsys):
    """Vice versa: the coordinator drops its last round from the record (rounds, directory, final/)."""
    manifest = audit_run.manifest()
    manifest["rounds"] = manifest["rounds"][:2]
    manifest["completed_rounds"] = manifest["rounds_planned"] = 1
    audit_run.write_manifest(manifest)
    shutil.rmtree(audit_run.run_dir / "rounds" / "2")
    shutil.rmtree(audit_run.run_dir / "final")
    shutil.copytree(audit_run.run_dir / "rounds" / "1", audit_run.run_dir / "final")
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert "its ledger records round 2 (entry 3)" in out.out and "no training round for" in out.out
    assert out.out.count("no training round for") == 2  # both sites' ledgers


def test_audit_verify_accepts_a_failed_run_whose_last_round_the_sites_paid_for(audit_run, capsys):
    """A run that failed in round 2 after the sites trained it: their ledger entries are not a discrepancy."""
    manifest = audit_run.manifest()
    manifest["rounds"] = manifest["rounds"][:2]
    manifest["completed_rounds"], manifest["status"] = 1, "failed"
    manifest["failure"] = "round 2: 1 usable update(s), `min_sites` is 2"
    audit_run.write_manifest(manifest)
    shutil.rmtree(audit_run.run_dir / "rounds" / "2")
    shutil.rmtree(audit_run.run_dir / "final")
    code, out = verify(audit_run, capsys)
    assert code == 0, out.err
    assert out.out.count("round(s) 2 trained and paid for by the site but not aggregated") == 2


# ---- issue 12: ε claims without fresh noise are void ---------------------------------------------


def test_audit_verify_voids_identical_updates_across_three_federations(make_audit_run, tmp_path, capsys):
    """Three runs on the same sites' ledgers, each producing bit-identical updates: the noise was not fresh."""

    def same(site: str, rnd: int) -> str:
        return hashlib.sha256(f"{site}/{rnd}".encode()).hexdigest()  # the same in every run

    first = make_audit_run(tmp_path / "1", update_sha=same)
    for n in (2, 3):
        last = make_audit_run(
            tmp_path / str(n), update_sha=same, signing=first.signing_keys, ledger_dir=tmp_path / "1" / "sites"
        )
    code, out = verify(last, capsys)
    assert code == VerificationFailed.exit_code
    assert VOID in out.err and one_line_error(out)
    void = out.out.split("FAIL fresh noise: ")[1].splitlines()[0]
    assert "site hospital-a entry 1 (run" in void and "the same update sha256" in void
    code = main(["audit", "verify", str(last.run_dir), *last.ledger_args(), *last.key_args(), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == VerificationFailed.exit_code
    assert len(report["void_epsilon"]) == 12  # 3 runs x 2 rounds x 2 sites, each with two twins
    assert {v["run_id"] for v in report["void_epsilon"]} == {
        json.loads((tmp_path / str(n) / "run" / "manifest.json").read_text())["run_id"] for n in (1, 2, 3)
    }


def test_audit_verify_voids_entries_written_before_noise_was_recorded(audit_run, capsys):
    """Format-1 entries record no noise source: their ε claims are void, though signed and chained."""
    audit_run.rewrite_ledger(
        "bank-c",
        lambda e: {**{k: v for k, v in e.items() if k not in ("noise_source", "phase", "distributed")}, "format": 1},
    )
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert f"fresh noise: {VOID}" in out.err
    assert "site bank-c entry 1" in out.err and "records no noise source (ledger format 1)" in out.err
    assert "hospital-a" not in out.out.split("FAIL fresh noise: ")[1].splitlines()[0]


def test_audit_verify_voids_noise_from_a_caller_generator(make_audit_run, tmp_path, capsys):
    run = make_audit_run(tmp_path, noise_source="caller-generator")
    code, out = verify(run, capsys)
    assert code == VerificationFailed.exit_code
    assert VOID in out.err and "noise_source 'caller-generator'" in out.err


# ---- the run directory and its manifest -----------------------------------------------------------


def _relabel_rounds(m):
    for r in m["rounds"][1:]:
        r["kind"] = "eval"
    return m


def _no_sites(m):
    for r in m["rounds"][1:]:
        r["sites"] = []
    return m


def _drop_site_from_table(m):
    m["sites"] = {k: v for k, v in m["sites"].items() if v != "bank-c"}
    return m


def _string_noise(m):
    m["rounds"][1]["sites"][0]["privacy"]["noise_multiplier"] = "1.1"
    return m


def _other_signer(m):
    m["rounds"][2]["sites"][0]["signing_key_fingerprint"] = "ab" * 32
    return m


def _changed_epsilon(m):
    m["rounds"][2]["sites"][1]["privacy"]["epsilon_total"] = 0.5
    return m


def _unrecorded_update(m):
    m["rounds"][1]["sites"][0]["update_sha256"] = "ee" * 32
    return m


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda m: {}, "malformed"),
        (lambda m: [], "malformed"),
        (lambda m: {"rounds": [{}]}, "malformed"),
        (lambda m: "a string", "malformed"),
        (_string_noise, "noise_multiplier"),
        (_relabel_rounds, "round 1 is not a training round"),
        (_no_sites, "training round 1 aggregated 0 site(s)"),
        (_drop_site_from_table, "lacks aggregated site(s) bank-c"),
        (_other_signer, "round 2: the update was signed by key abababab"),
        (_changed_epsilon, "epsilon_total: manifest 0.5"),
        (_unrecorded_update, "update sha256 in the manifest eeeeeeee"),
    ],
)
def test_audit_verify_catches_a_tampered_manifest_in_one_line(audit_run, capsys, tamper, expected):
    audit_run.write_manifest(tamper(audit_run.manifest()))
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code, out.err
    assert one_line_error(out) and expected in out.err


def test_audit_verify_catches_no_rounds_with_garbage_in_final(audit_run, capsys):
    manifest = audit_run.manifest()
    manifest["rounds"], manifest["completed_rounds"] = [], -1
    audit_run.write_manifest(manifest)
    shutil.rmtree(audit_run.run_dir / "rounds")
    (audit_run.run_dir / "final" / "adapter_model.safetensors").write_bytes(b"garbage")
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code and one_line_error(out)
    assert "status is completed after 0 of 2 planned training rounds" in out.err
    assert "final adapter" in out.out and "no training round for" in out.out


def test_audit_verify_catches_a_swapped_adapter_file(audit_run, capsys):
    one, two = (audit_run.run_dir / "rounds" / str(n) / "adapter_model.safetensors" for n in (1, 2))
    data_one, data_two = one.read_bytes(), two.read_bytes()
    one.write_bytes(data_two)
    two.write_bytes(data_one)
    code, out = verify(audit_run, capsys)
    assert code == VerificationFailed.exit_code
    assert "round 1 adapter" in out.err and "sha256" in out.err


def test_audit_verify_missing_inputs_are_configuration_errors(audit_run, capsys, tmp_path):
    assert main(["audit", "verify", str(tmp_path / "nowhere")]) == ConfigError.exit_code
    out = capsys.readouterr()
    assert one_line_error(out) and "run directory" in out.err
    assert main(["audit", "verify", str(audit_run.run_dir), "--ledger", str(tmp_path / "none.jsonl")]) == 2
    out = capsys.readouterr()
    assert one_line_error(out) and "none.jsonl does not exist" in out.err


def test_audit_verify_a_missing_public_key_is_a_configuration_error(audit_run, capsys, tmp_path):
    code = main(
        ["audit", "verify", str(audit_run.run_dir), *audit_run.ledger_args(), "--public-key", str(tmp_path / "x.pub")]
    )
    out = capsys.readouterr()
    assert code == ConfigError.exit_code and one_line_error(out)
    assert "x.pub" in out.err


def test_verify_run_a_missing_ledger_is_a_configuration_error_not_a_discrepancy(audit_run, tmp_path):
    # Called without the CLI too: an auditor's script tells a typo (ConfigError) from tampering.
    with pytest.raises(ConfigError, match=r"none\.jsonl does not exist"):
        verify_run(audit_run.run_dir, [tmp_path / "none.jsonl"], list(audit_run.public_keys.values()))


# ---- what was not given: incomplete (10), or accepted with --partial -------------------------------


def test_audit_verify_without_ledgers_is_incomplete_naming_every_site(audit_run, capsys):
    code, out = verify(audit_run, capsys, ledgers=False, public_keys=False)
    assert code == AuditIncomplete.exit_code and one_line_error(out)
    assert "site hospital-a: took part but no ledger was given" in out.err
    assert "site bank-c: took part but no ledger was given" in out.err
    code, out = verify(audit_run, capsys, "--partial", ledgers=False, public_keys=False)
    assert code == 0, out.err
    assert out.out.count("NOT CHECKED site") == 2 and "PARTIAL: 2 item(s) not checked" in out.out


def test_audit_verify_with_one_ledger_missing_is_incomplete(audit_run, capsys):
    given = ("hospital-a",)
    code = main(["audit", "verify", str(audit_run.run_dir), *audit_run.ledger_args(given), *audit_run.key_args(given)])
    out = capsys.readouterr()
    assert code == AuditIncomplete.exit_code
    assert "1 item(s) not checked: site bank-c: took part but no ledger was given" in out.err
    assert "hospital-a" not in out.err


def test_audit_verify_with_a_ledger_but_not_its_key_is_incomplete(audit_run, capsys):
    code, out = verify(audit_run, capsys, public_keys=False)
    assert code == AuditIncomplete.exit_code
    assert "site hospital-a: no --public-key given signs ledger" in out.err
    assert "site bank-c: no --public-key given signs ledger" in out.err


def test_audit_verify_catches_a_wrong_public_key(audit_run, capsys, tmp_path):
    from common import keys

    wrong = keys.save_public_key(keys.generate_signing_key(), tmp_path / "wrong.pub")
    audit_run.public_keys["hospital-a"] = wrong
    code, out = verify(audit_run, capsys, "--partial")
    assert code == VerificationFailed.exit_code
    assert "public key" in out.err and "wrong.pub" in out.err and "signs none of the given ledgers" in out.err
    assert "NOT CHECKED site hospital-a: no --public-key given signs ledger" in out.out


def test_audit_verify_forged_epsilon_total_without_ledgers_fails_even_with_partial(audit_run, capsys):
    manifest = audit_run.manifest()
    first = manifest["rounds"][1]["sites"][1]["privacy"]["epsilon_total"]
    manifest["rounds"][2]["sites"][1]["privacy"]["epsilon_total"] = first  # two rounds claimed at one's price
    audit_run.write_manifest(manifest)
    code, out = verify(audit_run, capsys, "--partial", ledgers=False, public_keys=False)
    assert code == VerificationFailed.exit_code and one_line_error(out)
    assert (
        "site bank-c" in out.err
        and "epsilon_total" in out.err
        and "what this run's events so far compose to" in out.err
    )


def test_audit_verify_an_adapter_encrypted_at_rest_is_not_checked_but_named(audit_run, capsys):
    adapter = audit_run.run_dir / "rounds" / "1" / "adapter_model.safetensors"
    adapter.rename(adapter.with_name(adapter.name + ".enc"))
    code, out = verify(audit_run, capsys)
    assert code == AuditIncomplete.exit_code
    assert "round 1 adapter: encrypted at rest" in out.err
    code, out = verify(audit_run, capsys, "--partial")
    assert code == 0 and "NOT CHECKED round 1 adapter" in out.out


def test_audit_verify_json_lists_checks_unchecked_and_void(audit_run, capsys):
    code, out = verify(audit_run, capsys, "--json", "--partial", public_keys=False)
    report = json.loads(out.out)
    assert code == 0
    assert report["ok"] is True and report["complete"] is False and report["void_epsilon"] == []
    assert len(report["unchecked"]) == 2 and all(c["ok"] for c in report["checks"])
