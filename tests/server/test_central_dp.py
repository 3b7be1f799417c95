"""Central DP at the coordinator: clipping, noise scale, accountant and its manifest record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.accounting import compute_epsilon, compute_epsilon_dp_accounting
from common.arrays import clip_delta
from common.config import CentralDPSection, FederationConfig, FederationSection, LoraSettings, ModelConfig, TaskConfig
from common.errors import ConfigError
from server.central_dp import CentralDP, noise_std

GLOBAL = {"w": np.zeros(200_000, np.float32)}


def test_clip_delta_scales_to_the_bound_and_leaves_small_deltas():
    big, norm = clip_delta({"a": np.array([3.0, 0.0]), "b": np.array([4.0])}, clip=1.0)
    small, _ = clip_delta({"a": np.array([0.3, 0.4])}, clip=1.0)

    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([big["a"], big["b"]]), [0.6, 0.0, 0.8])
    np.testing.assert_allclose(small["a"], [0.3, 0.4])


def test_noise_std_is_z_clip_over_sites():
    assert noise_std(noise_multiplier=1.5, clip=0.2, sites=3) == pytest.approx(0.1)


def test_aggregate_is_clipped_mean_plus_noise_of_the_documented_std():
    # Site deltas: 2 on the first coordinate (norm 2, clipped to 0.5 -> 0.5) and 0.1 (kept): mean 0.3.
    cfg = CentralDPSection(enabled=True, noise_multiplier=2.0, clip=0.5)
    sites = []
    for value in (2.0, 0.1):
        a = np.zeros_like(GLOBAL["w"])
        a[0] = value
        sites.append({"w": a})
    dp = CentralDP(cfg, rng=np.random.default_rng(0))

    out, record = dp.aggregate(GLOBAL, sites)

    noise = out["w"].astype(np.float64) - np.r_[0.3, np.zeros(len(GLOBAL["w"]) - 1)]
    expected_std = 2.0 * 0.5 / 2
    assert record["noise_std"] == pytest.approx(expected_std)
    # 200k draws: the sample std is within 1% of sigma (its relative s.e. is 1/sqrt(2n) = 0.16%).
    assert np.std(noise) == pytest.approx(expected_std, rel=0.01)
    assert abs(np.mean(noise)) < 5 * expected_std / math.sqrt(noise.size)
    assert record["sites_clipped"] == 1 and record["update_norms"] == pytest.approx([2.0, 0.1])
    assert out["w"].dtype == np.float32


def test_accountant_composes_rounds_and_matches_dp_accounting():
    cfg = CentralDPSection(enabled=True, noise_multiplier=1.0, clip=1.0, delta=1e-5)
    dp = CentralDP(cfg, rng=np.random.default_rng(1))
    small = {"w": np.zeros(4, np.float32)}
    records = [dp.aggregate(small, [{"w": np.ones(4, np.float32)}] * 3)[1] for _ in range(3)]

    totals = [r["epsilon_total"] for r in records]
    assert totals == sorted(totals) and totals[0] == pytest.approx(records[0]["epsilon_round"])
    assert totals[2] == pytest.approx(compute_epsilon([(1.0, 1.0, 3)], delta=1e-5))
    # Independent check with Google's dp_accounting (the same Balle et al. 2020 conversion).
    assert totals[2] == pytest.approx(compute_epsilon_dp_accounting([(1.0, 1.0, 3)], delta=1e-5), rel=1e-3)
    assert records[0] | {"epsilon_round": 0, "epsilon_total": 0, "update_norms": 0} == {
        "noise_multiplier": 1.0,
        "clip": 1.0,
        "sites": 3,
        "noise_std": 1 / 3,
        "sites_clipped": 3,
        "update_norms": 0,
        "sample_rate": 1.0,
        "unit": "site",
        "epsilon_round": 0,
        "epsilon_total": 0,
        "delta": 1e-5,
        "accountant": "rdp",
        "conversion": "balle2020",
    }


def test_accountant_history_survives_a_resume_through_the_manifest():
    cfg = CentralDPSection(enabled=True, noise_multiplier=1.2)
    first = CentralDP(cfg)
    small = {"w": np.zeros(2, np.float32)}
    rounds = [{"round": 0, "kind": "initial"}]
    for n in (1, 2):
        rounds.append({"round": n, "central_dp": first.aggregate(small, [small])[1]})

    resumed = CentralDP(cfg)
    resumed.load_history(rounds)
    _, third = resumed.aggregate(small, [small])

    assert third["epsilon_total"] == pytest.approx(compute_epsilon([(1.2, 1.0, 3)], delta=1e-5))


def test_central_dp_section_validates_fields():
    with pytest.raises(ConfigError, match=r"`central_dp.noise_multiplier` must be > 0, got 0"):
        CentralDPSection(noise_multiplier=0)
    with pytest.raises(ConfigError, match=r"`central_dp.clip` must be > 0"):
        CentralDPSection(clip=-1.0)
    with pytest.raises(ConfigError, match="`central_dp.accountant`"):
        CentralDPSection(accountant="gdp")
    assert CentralDPSection(accountant="prv").conversion == ""


def test_central_dp_needs_the_mean_aggregator():
    from common.config import SecuritySection

    with pytest.raises(ConfigError, match="needs `security.aggregator"):
        FederationConfig(
            federation=FederationSection(),
            model=ModelConfig(base="m"),
            lora=LoraSettings(),
            task=TaskConfig(),
            security=SecuritySection(aggregator="median"),
            central_dp=CentralDPSection(enabled=True),
        )
