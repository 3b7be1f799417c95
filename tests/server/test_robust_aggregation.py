"""Coordinate-wise trimmed mean and median, checked on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from common.config import Aggregator, FederationSection, SecuritySection, StrategyName
from server.strategy import FedAdam, SiteUpdate, coordinate_median, make_strategy, trimmed_mean, trimmed_per_side


def _updates(values: list[list[float]], examples: list[int] | None = None) -> list[SiteUpdate]:
    examples = examples or [1] * len(values)
    return [
        SiteUpdate(node_id=i, site_id=f"s{i}", arrays={"w": np.array(v, np.float32)}, num_examples=n)
        for i, (v, n) in enumerate(zip(values, examples, strict=True))
    ]


def test_trimmed_mean_drops_the_extremes_of_each_coordinate():
    # Coordinate 0: sorted 1 2 3 4 100, cut 1 each end -> (2+3+4)/3 = 3.
    # Coordinate 1: sorted -50 10 10 10 11 -> (10+10+10)/3 = 10.
    arrays = [{"w": np.array([v0, v1])} for v0, v1 in [(1, 10), (100, 10), (3, -50), (2, 11), (4, 10)]]

    out = trimmed_mean(arrays, trim_fraction=0.2)

    np.testing.assert_allclose(out["w"], [3.0, 10.0])


def test_trimmed_mean_with_nothing_cut_is_the_unweighted_mean():
    # floor(0.1 * 3) = 0: three sites, nothing trimmed.
    arrays = [{"w": np.array([0.0])}, {"w": np.array([3.0])}, {"w": np.array([9.0])}]

    assert trimmed_per_side(3, 0.1) == 0
    np.testing.assert_allclose(trimmed_mean(arrays, trim_fraction=0.1)["w"], [4.0])


def test_coordinate_median_odd_and_even():
    odd = [{"w": np.array([1.0, 7.0])}, {"w": np.array([100.0, -3.0])}, {"w": np.array([3.0, 0.0])}]
    even = [{"w": np.array([1.0])}, {"w": np.array([2.0])}, {"w": np.array([10.0])}, {"w": np.array([100.0])}]

    np.testing.assert_allclose(coordinate_median(odd)["w"], [3.0, 0.0])
    np.testing.assert_allclose(coordinate_median(even)["w"], [6.0])


def test_robust_aggregators_keep_dtype():
    arrays = [{"w": np.array([1.0], np.float32)}, {"w": np.array([2.0], np.float32)}]

    assert trimmed_mean(arrays, trim_fraction=0.0)["w"].dtype == np.float32
    assert coordinate_median(arrays)["w"].dtype == np.float32


def test_median_aggregator_ignores_claimed_example_counts():
    # A faulty site claiming 10,000 examples moves the mean to ~100 but not the median.
    updates = _updates([[1.0], [2.0], [100.0]], examples=[10, 10, 10_000])

    mean = make_strategy(FederationSection(), SecuritySection()).aggregate({"w": np.zeros(1)}, updates)
    median = make_strategy(FederationSection(), SecuritySection(aggregator="median")).aggregate(
        {"w": np.zeros(1)}, updates
    )

    assert mean["w"][0] > 99
    np.testing.assert_allclose(median["w"], [2.0])


def test_fedadam_steps_towards_the_median():
    # d = median - w = 2 - 0; m = 0.1 * 2 = 0.2, v = 0.01 * 4 = 0.04; w = 1.0 * 0.2 / (0.2 + 0) = 1.0.
    strategy = make_strategy(
        FederationSection(strategy=StrategyName.FEDADAM, server_learning_rate=1.0, beta1=0.9, beta2=0.99, tau=1e-12),
        SecuritySection(aggregator="median"),
    )

    out = strategy.aggregate({"w": np.zeros(1)}, _updates([[1.0], [2.0], [100.0]]))

    assert isinstance(strategy, FedAdam) and strategy.aggregator is Aggregator.MEDIAN
    np.testing.assert_allclose(out["w"], [1.0], rtol=1e-6)


def test_security_section_rejects_a_bad_trim_fraction():
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`security.trim_fraction` must be in \[0, 0.5\), got 0.5"):
        SecuritySection(aggregator="trimmed_mean", trim_fraction=0.5)
