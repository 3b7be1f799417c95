"""The ledger with distributed-noise rounds: both ε figures recorded and recomputable, the budget
enforced on the figure the site names, and a forged figure caught even when the site's key signs it."""

from __future__ import annotations

import hashlib
import json

import pytest

from client.ledger import Ledger
from common import keys
from common.accounting import Accountant, BudgetFigure, compute_epsilon
from common.distributed_dp import plan_distributed_round
from common.errors import BudgetExhausted
from common.ledger.entry import canonical, event_of
from common.ledger.verify import read_ledger, verify_ledger

DELTA = 1e-5
Q = 0.05


def _round(figure: BudgetFigure = BudgetFigure.SUM, *, sigma: float = 0.9, t: int = 3):
    return plan_distributed_round(
        noise_multiplier=sigma,
        min_honest=t,
        budget_figure=figure,
        learning_rate=0.05,
        max_grad_norm=1.0,
        expected_batch=50.0,
        grid_step=1e-6,
        dim=20_000,
        sample_rate=Q,
    )


def _reserve_and_record(ledger: Ledger, distributed, *, budget: float = 50.0, rnd: int = 1):
    plan = ledger.plan_round(
        noise_multiplier=distributed.noise_multiplier,
        sample_rate=Q,
        steps=1,
        delta=DELTA,
        accountant=Accountant.RDP,
        budget_epsilon=budget,
        budget_delta=DELTA,
        run_id="run-d",
        round=rnd,
        site_id="site-a",
        distributed=distributed,
    )
    ledger.record_round(
        plan,
        run_id="run-d",
        round=rnd,
        site_id="site-a",
        max_grad_norm=1.0,
        dataset_size=1000,
        update_sha256="cd" * 32,
    )
    return plan


@pytest.fixture
def key():
    return keys.generate_signing_key()


def test_distributed_rounds_record_both_figures_and_verify(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for rnd in (1, 2, 3):
            _reserve_and_record(ledger, _round(), rnd=rnd)

    assert verify_ledger(path, keys.public_key_from_raw(keys.public_key_raw(key))).ok
    entries = read_ledger(path)
    last = entries[-1]["distributed"]
    assert last["trust_model"] == "distributed" and last["min_honest"] == 3 and last["budget_figure"] == "sum"
    # The sum counts t = 3 shares: less ε than the site's own share alone, and the entry's ε is the sum's.
    assert last["epsilon_total_sum"] < last["epsilon_total_own"]
    assert entries[-1]["epsilon_total"] == pytest.approx(last["epsilon_total_sum"])
    own = [event_of(e, BudgetFigure.OWN_NOISE) for e in entries if e["kind"] == "reserve"]
    assert compute_epsilon(own, delta=DELTA) == pytest.approx(last["epsilon_total_own"], rel=1e-12)


def test_budget_is_enforced_on_the_figure_the_site_names(tmp_path, key):
    sum_figure, own_figure = _round(BudgetFigure.SUM), _round(BudgetFigure.OWN_NOISE)
    with Ledger.open(tmp_path / "probe.jsonl", signing_key=key, create=True) as probe:
        plan = _reserve_and_record(probe, sum_figure)
    eps_sum, eps_own = plan.distributed["epsilon_round_sum"], plan.distributed["epsilon_round_own"]
    budget = (eps_sum + eps_own) / 2  # between the two figures of one round
    with Ledger.open(tmp_path / "sum.jsonl", signing_key=key, create=True) as ledger:
        _reserve_and_record(ledger, sum_figure, budget=budget)
    with Ledger.open(tmp_path / "own.jsonl", signing_key=key, create=True) as ledger:
        with pytest.raises(BudgetExhausted):
            # The same σ read as the site's own share: its own-noise ε is what the budget sees.
            _reserve_and_record(ledger, _round(BudgetFigure.OWN_NOISE, sigma=0.9 / 3**0.5), budget=budget)
        assert ledger.entries() == []
    assert own_figure.share_variance == pytest.approx(3 * sum_figure.share_variance)


def test_a_forged_distributed_figure_is_caught_even_when_signed_by_the_site(tmp_path, key):
    path = tmp_path / "ledger.jsonl"
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        _reserve_and_record(ledger, _round())
    rows = path.read_bytes().splitlines(keepends=True)
    entry = json.loads(rows[0])
    entry["distributed"]["epsilon_total_own"] = entry["distributed"]["epsilon_total_own"] / 2
    entry = {k: v for k, v in entry.items() if k != "signature"}
    entry["signature"] = keys.sign(key, canonical(entry)).hex()
    rows[0] = canonical(entry) + b"\n"
    second = json.loads(rows[1])
    second["prev_sha256"] = hashlib.sha256(rows[0][:-1]).hexdigest()
    second["distributed"] = entry["distributed"]  # a round entry repeats its reservation's
    second = {k: v for k, v in second.items() if k != "signature"}
    second["signature"] = keys.sign(key, canonical(second)).hex()
    rows[1] = canonical(second) + b"\n"
    path.write_bytes(b"".join(rows))

    result = verify_ledger(path, keys.public_key_from_raw(keys.public_key_raw(key)))
    assert not result.ok and result.first_bad_index == 0 and "distributed.epsilon_total_own" in result.reason


def test_silo_budget_composes_distributed_rounds_as_the_ledger_does(tmp_path, key):
    from silo.commands.budget import budget_report

    path = tmp_path / "ledger.jsonl"
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for rnd in (1, 2):
            _reserve_and_record(ledger, _round(), rnd=rnd)
    report = budget_report(path)
    (run,) = report["runs"]
    assert run["epsilon_run"] == pytest.approx(read_ledger(path)[-1]["epsilon_total"], rel=1e-12)
    assert report["rounds"][-1]["distributed"]["min_honest"] == 3
