"""Ledger format 3: each training round records its phase (a DP linear-probe round or a LoRA round), so an
auditor sees the probe's share of the budget; the verifier refuses a phase that a round's reservation did
not name, or a phase on an entry that trained nothing."""

import hashlib
import json

import pytest

from client.ledger import Ledger
from common import keys
from common.accounting import Accountant, DPEvent, compute_epsilon, default_conversion
from common.errors import ConfigError
from common.ledger.entry import canonical, event_of
from common.ledger.verify import read_ledger, verify_ledger

DELTA = 1e-5
ROUND = {"noise_multiplier": 1.1, "sample_rate": 0.1, "steps": 10, "delta": DELTA, "accountant": Accountant.RDP}


def write(path, key, phases):
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for r, phase in enumerate(phases, start=1):
            plan = ledger.plan_round(budget_epsilon=100.0, budget_delta=DELTA, phase=phase, **ROUND)
            ledger.record_round(
                plan, run_id="r", round=r, site_id="s", max_grad_norm=1.0, dataset_size=100, update_sha256="ab" * 32
            )


def test_each_round_records_its_phase_and_the_probes_share_is_recomputable(tmp_path):
    key, path = keys.generate_signing_key(), tmp_path / "ledger.jsonl"
    write(path, key, ["probe", "probe", "lora", "lora", "lora"])
    entries = read_ledger(path)
    assert [(e["kind"], e["phase"]) for e in entries[:2]] == [("reserve", "probe"), ("round", "probe")]
    assert [e["phase"] for e in entries if e["kind"] == "round"] == ["probe"] * 2 + ["lora"] * 3
    assert verify_ledger(path, key.public_key()).ok

    # The probe's share, from the entries alone: epsilon of its rounds' events composed, against the total.
    def epsilon(phases):
        events = [event_of(e) for e in entries if e["kind"] == "reserve" and e["phase"] in phases]
        return compute_epsilon(events, delta=DELTA, accountant=Accountant.RDP, conversion=default_conversion("rdp"))

    probe, total = epsilon({"probe"}), epsilon({"probe", "lora"})
    assert 0 < probe < total and total == pytest.approx(entries[-1]["epsilon_total"], rel=1e-9)


def test_a_phase_must_be_probe_or_lora(tmp_path):
    key = keys.generate_signing_key()
    with pytest.raises(ConfigError, match="phase"):
        write(tmp_path / "ledger.jsonl", key, ["head"])


def resign(entry, key):
    """An edited entry signed again with the site key: a buggy writer, or the key holder lying."""
    entry = {k: v for k, v in entry.items() if k != "signature"}
    entry["signature"] = keys.sign(key, canonical(entry)).hex()
    return canonical(entry)


@pytest.mark.parametrize(
    ("index", "phase", "reason"),
    [(1, "lora", "differs from its reservation"), (0, None, "`phase`"), (2, "probe", "`phase`")],
    ids=["round-unlike-its-reservation", "reserve-without-phase", "evaluation-with-phase"],
)
def test_verify_refuses_a_phase_the_entries_kind_and_reservation_do_not_allow(tmp_path, index, phase, reason):
    key, path = keys.generate_signing_key(), tmp_path / "ledger.jsonl"
    write(path, key, ["probe"])
    with Ledger.open(path, signing_key=key) as ledger:
        ledger.charge_evaluation(
            DPEvent(20.0, 1.0, 1),
            delta=DELTA,
            accountant=Accountant.RDP,
            budget_epsilon=100.0,
            budget_delta=DELTA,
            dataset_size=40,
            evaluated_sha256="c" * 64,
            noise_source="os-seeded",
        )
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    rows[index]["phase"] = phase
    out = [resign(rows[0], key)]
    for row in rows[1:]:  # re-chain every later entry, so that only the edited field is wrong
        row["prev_sha256"] = hashlib.sha256(out[-1]).hexdigest()
        out.append(resign(row, key))
    path.write_bytes(b"".join(line + b"\n" for line in out))
    path.with_name(path.name + ".head").unlink()  # the signed head names the old last entry

    result = verify_ledger(path, key.public_key())
    assert not result.ok and result.first_bad_index == index and reason in result.reason
