"""The auditor recomputes both ε figures of distributed-noise rounds, independently of the site's code
path (dp-accounting for the Gaussian releases), and names a figure that does not recompute."""

from __future__ import annotations

import pytest

from client.ledger import Ledger
from common import keys
from common.accounting import Accountant, BudgetFigure, DPEvent
from common.distributed_dp import plan_distributed_round
from common.ledger.verify import read_ledger
from server.audit_epsilon import ledger_epsilon_problem

DELTA = 1e-5


def _distributed(figure: BudgetFigure):
    return plan_distributed_round(
        noise_multiplier=1.1,
        min_honest=2,
        budget_figure=figure,
        learning_rate=0.05,
        max_grad_norm=1.0,
        expected_batch=40.0,
        grid_step=1e-6,
        dim=8_000,
        sample_rate=0.04,
    )


def _ledger(path, figure: BudgetFigure):
    key = keys.generate_signing_key()
    with Ledger.open(path, signing_key=key, create=True) as ledger:
        for rnd in (1, 2):
            ledger.charge_evaluation(
                DPEvent(20.0, 1.0, 1),
                delta=DELTA,
                accountant=Accountant.RDP,
                budget_epsilon=30.0,
                budget_delta=DELTA,
                dataset_size=200,
                evaluated_sha256="ef" * 32,
                noise_source="os-seeded",
            )
            distributed = _distributed(figure)
            plan = ledger.plan_round(
                noise_multiplier=distributed.noise_multiplier,
                sample_rate=distributed.sample_rate,
                steps=1,
                delta=DELTA,
                accountant=Accountant.RDP,
                budget_epsilon=30.0,
                budget_delta=DELTA,
                distributed=distributed,
            )
            ledger.record_round(
                plan,
                run_id="r",
                round=rnd,
                site_id="s",
                max_grad_norm=1.0,
                dataset_size=1000,
                update_sha256="ab" * 32,
            )
    return read_ledger(path)


@pytest.mark.parametrize("figure", list(BudgetFigure))
def test_audit_recomputes_both_figures_of_distributed_rounds(tmp_path, figure):
    entries = _ledger(tmp_path / "l.jsonl", figure)
    problem, worst = ledger_epsilon_problem(entries)
    assert problem is None and worst < 1e-6
    last = entries[-1]
    assert last["distributed"]["budget_figure"] == figure.value
    suffix = "sum" if figure is BudgetFigure.SUM else "own"
    assert last["epsilon_total"] == pytest.approx(last["distributed"][f"epsilon_total_{suffix}"])


@pytest.mark.parametrize("name", ["epsilon_total_sum", "epsilon_round_own"])
def test_audit_names_a_distributed_figure_that_does_not_recompute(tmp_path, name):
    entries = _ledger(tmp_path / "l.jsonl", BudgetFigure.SUM)
    entries[-1]["distributed"][name] = entries[-1]["distributed"][name] * 0.9
    problem, _ = ledger_epsilon_problem(entries)
    assert problem is not None and f"entry {entries[-1]['index']}" in problem and name in problem


def test_declared_distributed_round_is_recomputed_and_a_forged_figure_named(tmp_path):
    from common.declaration import PrivacyDeclaration
    from server.audit_epsilon import declared_epsilon_problem, declared_total_problem

    entry = _ledger(tmp_path / "l.jsonl", BudgetFigure.SUM)[-1]
    declared = PrivacyDeclaration(
        dp_enabled=True,
        noise_multiplier=entry["noise_multiplier"],
        sample_rate=entry["sample_rate"],
        steps=entry["steps"],
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="rdp",
        conversion="balle2020",
        epsilon_round=entry["epsilon_round"],
        epsilon_total=entry["epsilon_total"],
        budget_epsilon=30.0,
        distributed=entry["distributed"],
    )
    assert declared_epsilon_problem(declared) is None and declared_total_problem([declared]) is None
    forged = {**entry["distributed"], "epsilon_round_own": entry["distributed"]["epsilon_round_own"] / 2}
    problem = declared_epsilon_problem(PrivacyDeclaration(**{**declared.__dict__, "distributed": forged}))
    assert problem is not None and "epsilon_round_own" in problem
    broken = {k: v for k, v in entry["distributed"].items() if k != "min_honest"}
    problem = declared_epsilon_problem(PrivacyDeclaration(**{**declared.__dict__, "distributed": broken}))
    assert problem is not None and "min_honest" in problem


def test_report_rows_show_the_trust_model_and_both_figures(tmp_path):
    from server.audit import _trust_model
    from server.audit_render import PRIVACY_HEADERS

    entry = _ledger(tmp_path / "l.jsonl", BudgetFigure.OWN_NOISE)[-1]
    row = _trust_model(entry["distributed"])
    assert row["trust_model"] == "distributed (t = 2, budget on own-noise)"
    assert row["epsilon_total_sum"] == entry["distributed"]["epsilon_total_sum"] < row["epsilon_total_own"]
    assert _trust_model(None) == {"trust_model": "local", "epsilon_total_sum": None, "epsilon_total_own": None}
    assert "ε total vs the sum (t honest)" in PRIVACY_HEADERS and "ε total, own noise alone" in PRIVACY_HEADERS
