"""Empirical privacy audit: canaries trained through the site's real round handler, with and without DP."""

import math

import pytest

from silo.canaries import CanaryAuditConfig, binomial_tail, one_run_epsilon_lower_bound, run_canary_audit


def test_one_run_bound_is_zero_for_chance_and_grows_with_correct_guesses():
    assert one_run_epsilon_lower_bound(8, 16) == 0.0
    assert 0 < one_run_epsilon_lower_bound(14, 16) < one_run_epsilon_lower_bound(16, 16)
    eps = one_run_epsilon_lower_bound(16, 16)
    p = math.exp(eps) / (1 + math.exp(eps))
    assert binomial_tail(16, p, 16) == pytest.approx(0.05, rel=1e-6)  # exactly at the 95% boundary


def test_canaries_dp_keeps_exposure_below_the_claim_and_no_dp_memorises(tmp_path, base_model_dir):
    """Both sides asserted: under DP the one-run lower bound stays below the claimed ε and planted
    canaries look like held-out ones; without DP (canaries repeated) they are clearly exposed."""
    audit = run_canary_audit(tmp_path, config=CanaryAuditConfig(), base_model=base_model_dir)
    dp, no_dp = audit.sides
    assert dp.dp and not no_dp.dp
    assert dp.planted >= 6 and no_dp.planted >= 6  # the site's 10% hold-out split may keep a few back

    assert math.isfinite(dp.claimed_epsilon) and dp.claimed_epsilon <= 8.0 + 1e-9
    assert dp.epsilon_lower_bound <= dp.claimed_epsilon
    assert dp.mean_exposure_planted < 3.0  # log2(256) = 8 bits would be full memorisation

    assert math.isinf(no_dp.claimed_epsilon)
    assert no_dp.mean_exposure_planted >= 4.0
    assert no_dp.mean_exposure_planted >= dp.mean_exposure_planted + 2.0
    assert no_dp.mean_exposure_held_out < 3.0  # exposure is about the planted secrets, not the template
    assert (tmp_path / "canaries.json").exists()
