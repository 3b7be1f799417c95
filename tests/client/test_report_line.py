"""The site's line per round (client/report_line.py): its ε increments add up to the ledger's total."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.ledger import Ledger
from client.report_line import evaluation_line, round_increment, round_line
from client.round_plan import RoundId
from common import keys
from common.ledger.verify import read_ledger
from common.run_request import RECORD, make_run_request

APP = "3f" * 32


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 88121, 7, 1


def _ledger(path: Path) -> list[dict]:
    """Two runs of two training rounds each, as a site records them; returns each round's entry."""
    entries = []
    with Ledger.open(path, signing_key=keys.generate_signing_key(), create=True) as ledger:
        for run_id in ("run-a", "run-b"):
            for r in (1, 2):
                common = {"delta": 1e-5, "accountant": "rdp", "budget_epsilon": 10.0, "budget_delta": 1e-5}
                plan = ledger.plan_round(
                    noise_multiplier=1.1, sample_rate=0.01, steps=100, run_id=run_id, round=r, site_id="s", **common
                )
                identity = {"run_id": run_id, "round": r, "site_id": "s"}
                sha = f"{r:02d}" * 32
                entry = ledger.record_round(plan, **identity, max_grad_norm=1.0, dataset_size=100, update_sha256=sha)
                entries.append(entry)
    return entries


def test_round_increments_add_up_to_the_ledger_total(tmp_path: Path) -> None:
    recorded = _ledger(tmp_path / "ledger.jsonl")
    entries = read_ledger(tmp_path / "ledger.jsonl")
    added = [round_increment(entries, run, r) for run in ("run-a", "run-b") for r in (1, 2)]
    assert sum(added) == pytest.approx(recorded[-1]["epsilon_total"])
    assert added[1] < added[0]  # composition: a later identical round adds less than the first
    assert math.isnan(round_increment(entries, "run-x", 1))


def test_round_line_names_the_round_run_app_counts_and_budget(tmp_path: Path) -> None:
    recorded = _ledger(tmp_path / "ledger.jsonl")
    signed = make_run_request(None, run_id="run-b", config_hash="c" * 64, app_sha256=APP, rounds=2, sites=None)
    msg = Message(RecordDict({RECORD: ConfigRecord(signed.record())}), dst_node_id=7, message_type=MessageType.TRAIN)
    scrub = {"records_in": 96, "quarantined": 1, "entities": {"PERSON": 40}}
    line = round_line(RoundId("run-b", 2, "s"), recorded[-1], scrub, "ab" * 32, tmp_path / "ledger.jsonl", msg)
    total = recorded[-1]["epsilon_total"]
    assert line.startswith(f"round 2 of run run-b (Flower run {msg.metadata.run_id}, app {APP[:12]}): ")
    assert "96 records scrubbed, 1 quarantined" in line
    assert f"total {total:.2f} of 10.00, {10 - total:.2f} left" in line
    assert re.search(r"ε \+0\.\d\d this round", line)
    assert line.endswith(f"sent update sha256 {'ab' * 6}")
    assert "PERSON" not in line  # counts only


def test_the_final_evaluation_answer_gets_a_line_with_what_it_spent(tmp_path: Path) -> None:
    from common.accounting import Accountant, DPEvent

    with Ledger.open(tmp_path / "b.jsonl", signing_key=keys.generate_signing_key(), create=True) as ledger:
        ledger.charge_evaluation(
            DPEvent(2.0, 1.0, 1),
            delta=1e-5,
            accountant=Accountant.RDP,
            budget_epsilon=10.0,
            budget_delta=1e-5,
            dataset_size=24,
            evaluated_sha256="cd" * 32,
            noise_source="os-seeded",
            run_id="run-b",
            round=2,
            site_id="s",
        )
    signed = make_run_request(None, run_id="run-b", config_hash="c" * 64, app_sha256=APP, rounds=2, sites=None)
    msg = Message(RecordDict({RECORD: ConfigRecord(signed.record())}), dst_node_id=7, message_type=MessageType.EVALUATE)
    line = evaluation_line(RoundId("run-b", 2, "s"), read_ledger(tmp_path / "b.jsonl"), msg)
    total = read_ledger(tmp_path / "b.jsonl")[-1]["epsilon_total"]
    assert total > 0
    assert line.startswith(f"evaluation answer for round 2 of run run-b (Flower run {msg.metadata.run_id}, app ")
    assert line.endswith(f"ε +{total:.2f}, total {total:.2f} of 10.00, {10 - total:.2f} left")
