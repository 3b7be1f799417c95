import hashlib
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.ledger import Ledger, restart_ledger
from client.ledger_export import export_ledger
from common import keys
from common.accounting import Accountant, DPEvent, compute_epsilon, compute_epsilon_dp_accounting
from common.errors import BudgetExhausted, ConfigError, LedgerError
from common.keys import public_key_raw, sign
from common.ledger.entry import FIELDS, canonical
from common.ledger.verify import iter_rounds, read_ledger, verify_ledger

DELTA = 1e-5
ROUND = {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps": 100}  # ~0.96 epsilon per round alone
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def key():
    return keys.generate_signing_key()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "site" / "ledger.jsonl"


def plan(ledger, *, budget_epsilon=10.0, **overrides):
    args = {**ROUND, "delta": DELTA, "accountant": Accountant.RDP, "budget_delta": DELTA, **overrides}
    return ledger.plan_round(budget_epsilon=budget_epsilon, **args)


def record(ledger, round_plan, *, run_id="run-1", round=1, site_id="site-a"):
    return ledger.record_round(
        round_plan,
        run_id=run_id,
        round=round,
        site_id=site_id,
        max_grad_norm=1.0,
        dataset_size=1000,
        update_sha256="ab" * 32,
    )


def write_rounds(path, key, rounds, *, run_id="run-1"):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for r in range(rounds):
            record(ledger, plan(ledger), run_id=run_id, round=r)


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


def resign(entry, key):
    """Re-sign an edited entry with the site key (a buggy writer, or the key holder lying)."""
    entry = {k: v for k, v in entry.items() if k != "signature"}
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    entry["signature"] = keys.sign(key, canonical).hex()
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


# ---- budget and composition ---------------------------------------------------------------------


def test_ledger_plan_round_refuses_over_budget_before_anything_is_written(path, key):
    write_rounds(path, key, 2)
    before = path.read_bytes()
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        spent = ledger.spent(delta=DELTA)
        with pytest.raises(BudgetExhausted, match=r"spent epsilon=1\.05\d+ .* would bring it to .* > budget 1\.1"):
            plan(ledger, budget_epsilon=1.1)
    assert path.read_bytes() == before
    assert spent == pytest.approx(compute_epsilon([tuple(ROUND.values())] * 2, delta=DELTA))


def test_ledger_cumulative_epsilon_composes_the_history_not_a_sum(path, key):
    write_rounds(path, key, 3)
    rounds = [e for e in read_ledger(path) if e["kind"] == "round"]
    single = rounds[0]["epsilon_round"]
    assert [e["epsilon_total"] for e in rounds] == [
        pytest.approx(compute_epsilon([tuple(ROUND.values())] * n, delta=DELTA)) for n in (1, 2, 3)
    ]
    assert rounds[-1]["epsilon_total"] < 3 * single


def test_ledger_cumulative_epsilon_matches_dp_accounting(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for r, (sigma, q, steps) in enumerate([(1.1, 0.01, 100), (0.9, 0.02, 50), (1.5, 0.005, 400)]):
            record(ledger, plan(ledger, noise_multiplier=sigma, sample_rate=q, steps=steps), round=r)
        history = ledger.history()
    recorded = read_ledger(path)[-1]["epsilon_total"]
    assert recorded == pytest.approx(compute_epsilon_dp_accounting(history, delta=DELTA), abs=1e-3)


def test_ledger_restart_and_second_run_compose_onto_what_was_spent(path, key):
    write_rounds(path, key, 2, run_id="run-1")
    with Ledger.open(path, signing_key=key, create=True) as ledger:  # a restarted node, then a second run
        assert len(ledger.history()) == 2
        round_plan = plan(ledger)
        record(ledger, round_plan, run_id="run-2", round=0)
    expected = compute_epsilon([tuple(ROUND.values())] * 3, delta=DELTA)
    assert round_plan.epsilon_total_after == pytest.approx(expected)
    assert read_ledger(path)[-1]["epsilon_total"] == pytest.approx(expected)


def test_ledger_crash_between_plan_and_record_keeps_the_reservation_spent(path, key):
    code = f"""
        import os
        from client.ledger import Ledger
        from common import keys
        key = keys.load_private_key({str(path.parent / "key.pem")!r})
        ledger = Ledger.open({str(path)!r}, signing_key=key, create=True)
        ledger.plan_round(noise_multiplier=1.1, sample_rate=0.01, steps=100, delta=1e-5, accountant="rdp",
                          budget_epsilon=10.0, budget_delta=1e-5)
        os._exit(1)  # dies mid-round: no record_round, no close
    """
    path.parent.mkdir(parents=True)
    keys.save_private_key(key, path.parent / "key.pem")
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, check=False)
    with Ledger.open(path, signing_key=key, create=True) as ledger:  # the lock died with the process
        assert ledger.history() == [(1.1, 0.01, 100)]
        assert plan(ledger).epsilon_total_before == pytest.approx(compute_epsilon([(1.1, 0.01, 100)], delta=DELTA))
    assert verify_ledger(path, key.public_key()).ok


def test_ledger_dp_off_round_is_infinite_and_needs_an_infinite_budget(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        with pytest.raises(BudgetExhausted):
            plan(ledger, noise_multiplier=0.0, dp_enabled=False)
        round_plan = plan(ledger, noise_multiplier=0.0, dp_enabled=False, budget_epsilon=math.inf)
        record(ledger, round_plan)
        with pytest.raises(BudgetExhausted, match="spent epsilon=inf"):
            plan(ledger)
    entry = read_ledger(path)[-1]
    assert entry["dp_enabled"] is False and entry["epsilon_total"] == math.inf
    assert b'"epsilon_total":"inf"' in lines(path)[-1]
    assert verify_ledger(path, key.public_key()).ok


def test_ledger_plan_round_rejects_dp_round_without_noise(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger, pytest.raises(ConfigError, match="enabled = false"):
        plan(ledger, noise_multiplier=0.0)


def test_ledger_plan_round_rejects_delta_above_budget(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger, pytest.raises(ConfigError, match="`delta`"):
        plan(ledger, delta=1e-4)


def test_ledger_record_round_twice_is_refused(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        round_plan = plan(ledger)
        record(ledger, round_plan)
        with pytest.raises(LedgerError, match="not open"):
            record(ledger, round_plan)


@pytest.mark.parametrize(
    ("trained", "message"),
    [
        ([(1.1, 0.01, 60), (1.1, 0.01, 41)], "trained 101 steps but reserved 100"),
        ([(1.0, 0.01, 100)], "trained with noise_multiplier=1.0"),
        ([(1.1, 0.02, 100)], "sample_rate=0.02"),
    ],
)
def test_ledger_record_round_refuses_training_beyond_the_reservation(path, key, trained, message):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        round_plan = plan(ledger)
        with pytest.raises(LedgerError, match=message):
            ledger.record_round(
                round_plan,
                run_id="r",
                round=0,
                site_id="s",
                max_grad_norm=1.0,
                dataset_size=10,
                update_sha256="ab" * 32,
                accountant_history=trained,
            )
        ledger.record_round(
            round_plan,
            run_id="r",
            round=0,
            site_id="s",
            max_grad_norm=1.0,
            dataset_size=10,
            update_sha256="ab" * 32,
            accountant_history=[(1.1, 0.01, 100)],
        )


def test_ledger_prv_accountant_records_no_conversion(path, key):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        record(ledger, plan(ledger, accountant=Accountant.PRV))
    entry = read_ledger(path)[-1]
    assert entry["accountant"] == "prv" and entry["epsilon_conversion"] is None
    assert verify_ledger(path, key.public_key()).ok


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rounds=st.lists(
        st.tuples(st.floats(0.6, 3.0), st.floats(0.001, 0.05), st.integers(1, 300)), min_size=1, max_size=6
    ),
    budget=st.floats(0.5, 8.0),
)
def test_ledger_never_overspends_and_epsilon_never_decreases(tmp_path_factory, rounds, budget):
    path = tmp_path_factory.mktemp("ledger") / "ledger.jsonl"
    key = keys.generate_signing_key()
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for r, (sigma, q, steps) in enumerate(rounds):
            try:
                round_plan = plan(ledger, noise_multiplier=sigma, sample_rate=q, steps=steps, budget_epsilon=budget)
            except BudgetExhausted:
                continue
            record(ledger, round_plan, round=r)
            assert ledger.spent(delta=DELTA) <= budget
    totals = [e["epsilon_total"] for e in read_ledger(path)]
    assert totals == sorted(totals)
    assert all(total <= budget for total in totals)


# ---- locking ------------------------------------------------------------------------------------


def test_ledger_open_refuses_a_second_open_while_locked(path, key):
    with (
        Ledger.open(path, signing_key=key, create=True),
        pytest.raises(LedgerError, match=r"locked by another run \(pid"),
    ):
        Ledger.open(path, signing_key=key, lock_timeout=0.2, create=True)
    Ledger.open(path, signing_key=key, create=True).close()  # released on close


@pytest.mark.slow
def test_ledger_lock_prevents_double_spend_across_processes(path, key):
    """Two site processes race for a budget that fits one round: exactly one trains."""
    path.parent.mkdir(parents=True)
    keys.save_private_key(key, path.parent / "key.pem")
    code = f"""
        import sys, time
        from client.ledger import Ledger
        from common import keys
        from common.errors import BudgetExhausted
        key = keys.load_private_key({str(path.parent / "key.pem")!r})
        with Ledger.open({str(path)!r}, signing_key=key, lock_timeout=60, create=True) as ledger:
            try:
                p = ledger.plan_round(noise_multiplier=1.1, sample_rate=0.01, steps=100, delta=1e-5,
                                      accountant="rdp", budget_epsilon=1.0, budget_delta=1e-5)
            except BudgetExhausted:
                print("refused"); sys.exit(0)
            time.sleep(1.0)  # "training", lock held
            ledger.record_round(p, run_id=sys.argv[1], round=0, site_id="s", max_grad_norm=1.0,
                                dataset_size=100, update_sha256="ab" * 32)
            print("trained")
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), f"run-{i}"], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outcomes == ["refused", "trained"]
    assert [e["kind"] for e in read_ledger(path)] == ["reserve", "round"]
    assert verify_ledger(path, key.public_key()).ok


# ---- verification -------------------------------------------------------------------------------


@pytest.fixture
def ledger_file(path, key):
    write_rounds(path, key, 3)  # 6 entries: reserve, round, reserve, round, reserve, round
    return path


def tampered(path, new_lines):
    path.write_bytes(b"".join(new_lines))
    return path


def test_verify_ledger_accepts_an_untouched_ledger(ledger_file, key):
    result = verify_ledger(ledger_file, key.public_key())
    assert result.ok and result.entries == 6 and result.first_bad_index is None


def test_verify_ledger_names_an_edited_entry(ledger_file, key):
    rows = lines(ledger_file)
    rows[2] = rows[2].replace(b'"steps":100', b'"steps":10')
    result = verify_ledger(tampered(ledger_file, rows), key.public_key())
    assert (result.ok, result.first_bad_index) == (False, 2)
    assert "signature invalid" in result.reason


def test_verify_ledger_names_the_entry_after_a_deleted_one(ledger_file, key):
    rows = lines(ledger_file)
    del rows[2]
    result = verify_ledger(tampered(ledger_file, rows), key.public_key())
    assert (result.ok, result.first_bad_index) == (False, 2)
    assert "deleted, inserted or reordered" in result.reason


def test_verify_ledger_names_reordered_entries(ledger_file, key):
    rows = lines(ledger_file)
    rows[2], rows[3] = rows[3], rows[2]
    assert verify_ledger(tampered(ledger_file, rows), key.public_key()).first_bad_index == 2


def test_verify_ledger_names_an_inserted_entry(ledger_file, key):
    rows = lines(ledger_file)
    rows.insert(4, rows[2])
    assert verify_ledger(tampered(ledger_file, rows), key.public_key()).first_bad_index == 4


def test_verify_ledger_names_an_entry_signed_by_another_key(ledger_file, key):
    rows = lines(ledger_file)
    other = keys.generate_signing_key()
    entry = json.loads(rows[3])
    entry["site_public_key"] = keys.public_key_raw(other).hex()
    rows[3] = resign(entry, other)
    result = verify_ledger(tampered(ledger_file, rows), key.public_key())
    assert result.first_bad_index == 3 and "different key" in result.reason


def test_verify_ledger_catches_a_changed_epsilon_even_when_re_signed(ledger_file, key):
    rows = lines(ledger_file)
    entry = json.loads(rows[4])
    entry["epsilon_total"] = entry["epsilon_total"] - 0.1
    rows[4] = resign(entry, key)
    rows[5] = resign({**json.loads(rows[5]), "prev_sha256": _sha256(rows[4][:-1])}, key)
    result = verify_ledger(tampered(ledger_file, rows), key.public_key())
    assert result.first_bad_index == 4
    assert "epsilon_total recorded" in result.reason and "recompute" in result.reason


def test_verify_ledger_catches_an_incomplete_last_line(ledger_file, key):
    rows = lines(ledger_file)
    rows[-1] = rows[-1][:40]
    result = verify_ledger(tampered(ledger_file, rows), key.public_key())
    assert result.first_bad_index == 5 and "incomplete" in result.reason


def test_ledger_open_refuses_a_tampered_ledger(ledger_file, key):
    rows = lines(ledger_file)
    del rows[0]
    tampered(ledger_file, rows)
    with pytest.raises(LedgerError, match="entry 0"):
        Ledger.open(ledger_file, signing_key=key, create=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), new_byte=st.integers(0, 255))
def test_verify_ledger_catches_any_tampered_byte(ledger_file, key, position, new_byte):
    original = ledger_file.read_bytes()
    position %= len(original)
    if original[position] == new_byte:
        new_byte = (new_byte + 1) % 256
    data = bytearray(original)
    data[position] = new_byte
    ledger_file.write_bytes(bytes(data))
    try:
        assert not verify_ledger(ledger_file, key.public_key()).ok
    finally:
        ledger_file.write_bytes(original)


# ---- export -------------------------------------------------------------------------------------


def test_export_ledger_writes_entries_public_key_and_manifest_only(ledger_file, key, tmp_path):
    out = export_ledger(ledger_file, tmp_path / "audit")
    assert sorted(p.name for p in out.iterdir()) == ["ledger.jsonl", "manifest.json", "site_public_key.pem"]
    assert (out / "ledger.jsonl").read_bytes() == ledger_file.read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["site_public_key_fingerprint"] == keys.fingerprint(key)
    assert manifest["self_verification"]["ok"] is True and manifest["entries"] == 6
    assert keys.fingerprint(keys.load_public_key(out / "site_public_key.pem")) == keys.fingerprint(key)
    assert not any(b"PRIVATE" in p.read_bytes() for p in out.iterdir())


def _sha256(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_verify_ledger_without_a_key_checks_against_the_embedded_key(ledger_file, key):
    assert verify_ledger(ledger_file, None).ok
    rows = lines(ledger_file)
    rows[3] = b"{not json\n"
    result = verify_ledger(tampered(ledger_file, rows), None)
    assert result.first_bad_index == 3 and "not valid JSON" in result.reason


# ---- a ledger that cannot be reset --------------------------------------------------------------


def _one_round(path, key, rnd=1):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        plan = ledger.plan_round(
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=10,
            delta=DELTA,
            accountant=Accountant.RDP,
            budget_epsilon=100.0,
            budget_delta=DELTA,
            run_id="r",
            round=rnd,
            site_id="s",
        )
        ledger.record_round(
            plan, run_id="r", round=rnd, site_id="s", max_grad_norm=1.0, dataset_size=100, update_sha256="a" * 64
        )


def test_ledger_refuses_to_start_over_when_missing_unless_asked(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    with pytest.raises(LedgerError, match="is missing"):
        Ledger.open(path, signing_key=key)
    _one_round(path, key)
    path.unlink()
    with pytest.raises(LedgerError, match="is missing.*silo ledger restart"):
        Ledger.open(path, signing_key=key, create=True)  # the head remembers it existed
    assert not path.exists()


@pytest.mark.parametrize("damage", ["truncate-to-empty", "drop-last-line", "replace-with-another-ledger"])
def test_ledger_refuses_a_truncated_or_replaced_ledger(tmp_path, key, damage):
    path = tmp_path / "ledger.jsonl"
    _one_round(path, key, 1)
    _one_round(path, key, 2)
    if damage == "truncate-to-empty":
        path.write_bytes(b"")
    elif damage == "drop-last-line":
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    else:  # a fresh, valid ledger signed by the same key, put in its place
        other = tmp_path / "other" / "ledger.jsonl"
        _one_round(other, key, 1)
        _one_round(other, key, 2)
        path.write_bytes(other.read_bytes())
    with pytest.raises(LedgerError, match="lost, truncated or replaced"):
        Ledger.open(path, signing_key=key)


def test_ledger_refuses_a_forged_head(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    _one_round(path, key)
    head = path.with_name(path.name + ".head")
    forged = json.loads(head.read_text())
    forged["entries"] = 0
    head.write_text(json.dumps(forged))
    with pytest.raises(LedgerError, match="not the site's"):
        Ledger.open(path, signing_key=key)


def test_ledger_restart_is_deliberate_and_recorded(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    _one_round(path, key)
    lost_head = hashlib.sha256(path.read_bytes().splitlines()[-1]).hexdigest()
    path.unlink()
    entry = restart_ledger(path, signing_key=key)
    assert entry["kind"] == "restart" and entry["index"] == 0 and entry["update_sha256"] == lost_head
    assert verify_ledger(path, key.public_key()).ok
    with Ledger.open(path, signing_key=key) as ledger:  # a site can train again, from a visible restart
        assert ledger.spent(delta=DELTA) == 0.0
    assert list(tmp_path.glob("ledger.jsonl.head.lost-*"))


def test_round_entries_record_the_noise_source_and_must_match_the_plan(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        plan = ledger.plan_round(
            noise_multiplier=1.0,
            sample_rate=0.1,
            steps=10,
            delta=DELTA,
            accountant=Accountant.RDP,
            budget_epsilon=100.0,
            budget_delta=DELTA,
        )
        with pytest.raises(LedgerError, match="noise source"):
            ledger.record_round(
                plan,
                run_id="r",
                round=1,
                site_id="s",
                max_grad_norm=1.0,
                dataset_size=10,
                update_sha256="b" * 64,
                noise_source="caller-generator",
            )
        entry = ledger.record_round(
            plan, run_id="r", round=1, site_id="s", max_grad_norm=1.0, dataset_size=10, update_sha256="b" * 64
        )
    assert entry["noise_source"] == "os-seeded" and entry["format"] == 4 and entry["phase"] == "lora"


def test_evaluation_entries_count_as_spent_and_verify(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    event = DPEvent(5.0, 1.0, 1)
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        ledger.charge_evaluation(
            event,
            delta=DELTA,
            accountant=Accountant.RDP,
            budget_epsilon=100.0,
            budget_delta=DELTA,
            dataset_size=40,
            evaluated_sha256="c" * 64,
            noise_source="os-seeded",
        )
        assert ledger.history() == [event]
        spent = ledger.spent(delta=DELTA)
        with pytest.raises(BudgetExhausted, match="Nothing evaluated"):
            ledger.charge_evaluation(
                event,
                delta=DELTA,
                accountant=Accountant.RDP,
                budget_epsilon=spent * 1.2,
                budget_delta=DELTA,
                dataset_size=40,
                evaluated_sha256="c" * 64,
                noise_source="os-seeded",
            )
    result = verify_ledger(path, key.public_key())
    assert result.ok and result.epsilon_total == pytest.approx(spent)
    assert [status for _, status in iter_rounds(read_ledger(path))] == ["evaluation"]


def test_format_1_entries_still_verify(tmp_path, key):
    """Ledgers written before fresh noise keep verifying (the audit declares their ε void)."""
    path = tmp_path / "ledger.jsonl"
    entry = {name: None for name in FIELDS}
    entry.update(
        format=1,
        index=0,
        kind="reserve",
        dp_enabled=True,
        noise_multiplier=1.0,
        sample_rate=0.1,
        steps=10,
        sampling="poisson",
        accountant="rdp",
        epsilon_conversion="balle2020",
        delta=DELTA,
        budget_epsilon=100.0,
        budget_delta=DELTA,
        timestamp="2026-01-01T00:00:00Z",
        code_version="old",
        site_public_key=public_key_raw(key).hex(),
        prev_sha256="0" * 64,
    )
    event = DPEvent(1.0, 0.1, 10)
    entry["epsilon_round"] = entry["epsilon_total"] = compute_epsilon([event], delta=DELTA)
    del entry["signature"]
    entry["signature"] = sign(key, canonical(entry)).hex()
    path.write_bytes(canonical(entry) + b"\n")
    assert verify_ledger(path, key.public_key()).ok
