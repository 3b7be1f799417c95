"""The Skellam mechanism's RDP (common/skellam.py): Agarwal et al.'s bound by hand, Zhu and Wang's
subsampling bound against the exact subsampled Gaussian, and Kairouz et al.'s rounding bound."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.skellam import poisson_subsampled_rdp, rounded_l2_bound, skellam_rdp


def test_skellam_rdp_is_the_gaussian_term_plus_agarwal_et_al_discretisation_surcharge():
    # Agarwal, Kairouz, Liu 2021 Cor. 3.6 by hand at alpha 4, variance 100, Δ2 2, Δ1 3:
    # 4*4/200 = 0.08 plus min((7*4 + 18)/(4*10^4), 9/200) = min(0.00115, 0.045).
    assert skellam_rdp(4, variance=100.0, l2_sensitivity=2.0, l1_sensitivity=3.0) == pytest.approx(0.08115)


@settings(max_examples=25, deadline=None)
@given(
    sigma=st.floats(min_value=0.5, max_value=5.0),
    q=st.floats(min_value=1e-3, max_value=0.5),
    order=st.integers(min_value=2, max_value=63),
)
def test_zhu_wang_bound_is_above_the_exact_subsampled_gaussian_and_below_no_sampling(sigma, q, order):
    from opacus.accountants.analysis import rdp as opacus_rdp

    exact = float(opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[order])[0])
    bound = poisson_subsampled_rdp(order, q, lambda a: a / (2 * sigma**2))
    # At order 2 the two are the same formula: equal up to float rounding (relative 1e-6).
    assert exact <= bound * (1 + 1e-6) and bound <= order / (2 * sigma**2) * (1 + 1e-12)


def test_rounded_l2_bound_matches_kairouz_et_al_and_the_sure_bound():
    # sqrt(400^2 + 50176/4 + sqrt(2 ln 1e5) * (400 + sqrt(50176)/2)) by hand: 418.33.
    assert rounded_l2_bound(400.0, dim=50_176, beta=1e-5) == pytest.approx(418.331, abs=1e-3)
    assert rounded_l2_bound(0.5, dim=4, beta=1e-5) == pytest.approx(2.5)  # l2 + sqrt(dim) is smaller
