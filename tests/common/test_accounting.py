import math
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common.accounting import (
    Accountant,
    DPEvent,
    EpsilonConversion,
    SkellamEvent,
    compute_epsilon,
    compute_epsilon_distributed,
    compute_epsilon_dp_accounting,
    find_distributed_noise_multiplier,
    find_noise_multiplier,
)
from common.errors import ConfigError
from common.skellam import rounded_l1_bound

# MNIST DP-SGD reference (Abadi et al. 2016; TF-Privacy / Opacus READMEs): batch 256 of 60,000 for
# 60 epochs = 14,062 steps at sigma 1.1, delta 1e-5.
MNIST = [(1.1, 256 / 60000, 14062)]
DELTA = 1e-5

events = st.tuples(
    st.floats(min_value=0.5, max_value=5.0),  # noise_multiplier
    st.floats(min_value=1e-3, max_value=0.1),  # sample_rate
    st.integers(min_value=1, max_value=3000),  # steps
)
histories = st.lists(events, min_size=1, max_size=4)

# Where dp_accounting 0.6.0 is itself accurate to 1e-3: its fractional-order RDP over-estimates when
# the optimal order is a small fraction (q >~ 0.02, sigma <~ 1, epsilon >~ 5); see the ground-truth test.
cross_check_events = st.tuples(
    st.floats(min_value=1.0, max_value=5.0),
    st.floats(min_value=1e-3, max_value=0.02),
    st.integers(min_value=1, max_value=3000),
)


def test_compute_epsilon_reproduces_classic_conversion_reference():
    eps = compute_epsilon(MNIST, delta=DELTA, conversion=EpsilonConversion.CLASSIC)
    assert round(eps, 3) == 3.008


def test_compute_epsilon_reproduces_opacus_conversion_reference():
    eps = compute_epsilon(MNIST, delta=DELTA, conversion=EpsilonConversion.BALLE2020)
    assert round(eps, 3) == 2.597


def test_compute_epsilon_matches_opacus_rdp_accountant():
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = list(MNIST)
    assert compute_epsilon(MNIST, delta=DELTA) == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-12)


def test_compute_epsilon_dp_accounting_reproduces_references():
    assert compute_epsilon_dp_accounting(MNIST, delta=DELTA) == pytest.approx(2.597, abs=1e-3)
    assert compute_epsilon_dp_accounting(MNIST, delta=DELTA, conversion=EpsilonConversion.CLASSIC) == pytest.approx(
        3.008, abs=1e-3
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(cross_check_events, min_size=1, max_size=4),
    conversion=st.sampled_from(list(EpsilonConversion)),
)
def test_compute_epsilon_matches_dp_accounting_on_random_histories(history, conversion):
    ours = compute_epsilon(history, delta=DELTA, conversion=conversion)
    assume(ours <= 5)
    google = compute_epsilon_dp_accounting(history, delta=DELTA, conversion=conversion)
    assert ours == pytest.approx(google, abs=1e-3)


def test_compute_epsilon_fractional_order_rdp_matches_ground_truth():
    """Where Opacus and dp_accounting disagree (q=1/16, sigma=1: epsilon 5.4755 vs 5.4768), Opacus'
    fractional-order RDP matches a 40-digit numerical integration and dp_accounting's is too high."""
    mpmath = pytest.importorskip("mpmath")
    from opacus.accountants.analysis import rdp as opacus_rdp

    q, sigma, order = 0.0625, 1.0, 1.5
    mpmath.mp.dps = 40

    def density(z):  # A_alpha = E_{z ~ N(0, sigma^2)} [(1 - q + q exp((2z - 1) / (2 sigma^2)))^alpha]
        return mpmath.npdf(z, 0, sigma) * (1 - q + q * mpmath.e ** ((2 * z - 1) / (2 * sigma**2))) ** order

    truth = float(mpmath.log(mpmath.quad(density, [-mpmath.inf, -10, 0, 10, mpmath.inf])) / (order - 1))
    ours = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[order])[0]
    assert ours == pytest.approx(truth, rel=1e-9)
    assert compute_epsilon([(sigma, q, 125)], delta=DELTA) < compute_epsilon_dp_accounting(
        [(sigma, q, 125)], delta=DELTA
    )


@settings(max_examples=25, deadline=None)
@given(history=histories, extra=events)
def test_compute_epsilon_never_decreases_when_composing(history, extra):
    before = compute_epsilon(history, delta=DELTA)
    after = compute_epsilon([*history, extra], delta=DELTA)
    assert after >= before


def test_compute_epsilon_composes_not_adds():
    one = compute_epsilon([(1.0, 0.01, 500)], delta=DELTA)
    two = compute_epsilon([(1.0, 0.01, 500), (1.0, 0.01, 500)], delta=DELTA)
    assert one < two < 2 * one
    assert two == compute_epsilon([(1.0, 0.01, 1000)], delta=DELTA)


def test_compute_epsilon_empty_history_is_zero():
    assert compute_epsilon([], delta=DELTA) == 0.0


def test_compute_epsilon_without_noise_is_infinite():
    assert compute_epsilon([(1.0, 0.01, 10), (0.0, 0.01, 10)], delta=DELTA) == math.inf
    assert compute_epsilon([(0.0, 0.01, 10)], delta=DELTA, accountant=Accountant.PRV, conversion=None) == math.inf


def test_compute_epsilon_prv_is_tighter_than_rdp():
    prv = compute_epsilon(MNIST, delta=DELTA, accountant=Accountant.PRV, conversion=None)
    assert 2.0 < prv < compute_epsilon(MNIST, delta=DELTA)


def test_compute_epsilon_prv_with_every_record_in_every_step_is_quiet_and_finite():
    # q = 1 (a DP-FedSGD round over all records): Opacus' PRV takes log(1 - q) on purpose; no warning reaches
    # the operator, and the value is the Gaussian mechanism's, below RDP's bound for it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prv = compute_epsilon([(3.0, 1.0, 10)], delta=DELTA, accountant=Accountant.PRV, conversion=None)
    assert 0 < prv < compute_epsilon([(3.0, 1.0, 10)], delta=DELTA)


def test_compute_epsilon_rejects_conversion_with_prv():
    with pytest.raises(ConfigError, match="rdp accountant only"):
        compute_epsilon(MNIST, delta=DELTA, accountant=Accountant.PRV, conversion=EpsilonConversion.CLASSIC)


@pytest.mark.parametrize("delta", [0, 1, -1e-5, 2])
def test_compute_epsilon_rejects_bad_delta(delta):
    with pytest.raises(ConfigError, match="`delta` must be in"):
        compute_epsilon(MNIST, delta=delta)


def test_compute_epsilon_rejects_bad_event():
    with pytest.raises(ConfigError, match="`sample_rate` must be in"):
        compute_epsilon([(1.0, 1.5, 10)], delta=DELTA)


@settings(max_examples=20, deadline=None)
@given(
    target_epsilon=st.floats(min_value=0.3, max_value=10.0),
    sample_rate=st.floats(min_value=1e-3, max_value=0.2),
    steps=st.integers(min_value=1, max_value=2000),
    conversion=st.sampled_from(list(EpsilonConversion)),
)
def test_find_noise_multiplier_never_overshoots(target_epsilon, sample_rate, steps, conversion):
    sigma = find_noise_multiplier(
        target_epsilon=target_epsilon, delta=DELTA, sample_rate=sample_rate, steps=steps, conversion=conversion
    )
    spent = compute_epsilon([(sigma, sample_rate, steps)], delta=DELTA, conversion=conversion)
    assert spent <= target_epsilon


def test_find_noise_multiplier_lands_within_tolerance():
    sigma = find_noise_multiplier(target_epsilon=2.597, delta=DELTA, sample_rate=256 / 60000, steps=14062)
    spent = compute_epsilon([(sigma, 256 / 60000, 14062)], delta=DELTA)
    assert 2.597 - 0.01 <= spent <= 2.597
    assert sigma == pytest.approx(1.1, abs=0.01)


def test_find_noise_multiplier_prv_never_overshoots():
    sigma = find_noise_multiplier(
        target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=200, accountant=Accountant.PRV, conversion=None
    )
    spent = compute_epsilon([(sigma, 0.01, 200)], delta=DELTA, accountant=Accountant.PRV, conversion=None)
    assert 0.99 - 0.01 <= spent <= 1.0


def test_find_noise_multiplier_rejects_unreachable_target():
    with pytest.raises(ConfigError, match="unreachable"):
        find_noise_multiplier(target_epsilon=1e-9, delta=DELTA, sample_rate=1.0, steps=1000)


def test_a_target_the_planned_evaluations_alone_exceed_names_them_not_the_training_noise():
    # 11 evaluation answers at σ=2 spend ε ≈ 8.55 at δ=1e-5 whatever the training noise: the site operator
    # must be told to plan fewer rounds or noisier answers, not that σ=10000 is too little.
    evaluations = [DPEvent(2.0, 1.0, 1)] * 11
    with pytest.raises(ConfigError, match=r"spends 8\.5\d; the 11 releases planned beside training"):
        find_noise_multiplier(target_epsilon=8.0, delta=DELTA, sample_rate=1 / 6, steps=60, extra_events=evaluations)


# ---- distributed noise (Skellam under SecAgg) -----------------------------------------------------


def test_skellam_with_large_variance_spends_what_the_gaussian_does_at_full_sampling():
    l2 = 1000.0
    for sigma in (0.8, 1.5, 4.0):
        event = SkellamEvent((sigma * l2) ** 2, l2, rounded_l1_bound(l2, dim=50_000), 1.0, 10)
        skellam = compute_epsilon_distributed([], [event], delta=DELTA)
        gaussian = compute_epsilon_distributed([(sigma, 1.0, 10)], [], delta=DELTA)
        assert gaussian <= skellam <= gaussian * 1.01


def test_distributed_gaussian_part_agrees_between_opacus_and_dp_accounting():
    history = [(1.1, 0.01, 500), (20.0, 1.0, 4)]
    opacus = compute_epsilon_distributed(history, [], delta=DELTA)
    independent = compute_epsilon_distributed(history, [], delta=DELTA, gaussian_rdp="dp_accounting")
    assert opacus == pytest.approx(independent, rel=1e-6)
    # Integer orders only: never tighter than Opacus' own accountant, which adds fractional ones.
    assert opacus >= compute_epsilon(history, delta=DELTA) * (1 - 1e-12)


def test_more_honest_noise_spends_less():
    def eps(variance: float) -> float:
        return compute_epsilon_distributed([], [SkellamEvent(variance, 400.0, 4e4, 0.05, 30)], delta=DELTA)

    assert eps(1.0e6) > eps(2.0e5 * 10) > eps(3.0e6)


@settings(max_examples=10, deadline=None)
@given(target=st.floats(min_value=0.5, max_value=10.0), q=st.floats(min_value=0.01, max_value=0.3))
def test_find_distributed_noise_multiplier_never_overshoots(target, q):
    l2, l1 = 418.0, 418.0 * 224
    sigma = find_distributed_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, rounds=20, l2_sensitivity=l2, l1_sensitivity=l1
    )
    spent = compute_epsilon_distributed([], [SkellamEvent((sigma * l2) ** 2, l2, l1, q, 20)], delta=DELTA)
    assert spent <= target
    assert target - spent <= 0.01 or sigma <= 1e-5
