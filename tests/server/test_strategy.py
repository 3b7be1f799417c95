"""Aggregation against hand-computed cases: FedAvg, FedProx, FedAdam (and its resume safety)."""

import numpy as np
import pytest

from common.config import FederationSection, StrategyName
from server.checkpoint import RunDirectory
from server.strategy import FedAdam, FedAvg, FedProx, SiteUpdate, average_metrics, make_strategy, weighted_average


def _update(node_id: int, values: list[float], num_examples: int, **metrics: float) -> SiteUpdate:
    arrays = {"w": np.array(values, dtype=np.float64)}
    return SiteUpdate(
        node_id=node_id, site_id=f"site-{node_id}", arrays=arrays, num_examples=num_examples, metrics=dict(metrics)
    )


def _adam() -> FedAdam:
    return FedAdam(server_learning_rate=0.1, beta1=0.9, beta2=0.99, tau=0.01)


# Two FedAdam rounds from w0 = [0, 1] (eta 0.1, beta1 0.9, beta2 0.99, tau 0.01; no bias correction).
W0 = {"w": np.array([0.0, 1.0])}
# Round 1: sites with 1 and 3 examples send [2, 1] and [2, 0]: avg = [2, 0.25], d = [2, -0.75].
ROUND1 = [_update(1, [2.0, 1.0], 1), _update(2, [2.0, 0.0], 3)]
M1 = [0.2, -0.075]  # 0.1 * d
V1 = [0.04, 0.005625]  # 0.01 * d^2; sqrt = [0.2, 0.075]
W1 = [2 / 21, 31 / 34]  # w0 + 0.1 * m / (sqrt(v) + 0.01) = [0.02 / 0.21, 1 - 0.0075 / 0.085]
# Round 2: both sites send [1, 1]: d = [1 - 2/21, 1 - 31/34] = [19/21, 3/34].
ROUND2 = [_update(1, [1.0, 1.0], 5), _update(2, [1.0, 1.0], 7)]
M2 = [0.2704761905, -0.0586764706]  # 0.9 * m1 + 0.1 * d = [0.18 + 0.0904761905, -0.0675 + 0.0088235294]
V2 = [0.0477859410, 0.0056466047]  # 0.99 * v1 + 0.01 * d^2 = [0.0396 + 0.0081859410, 0.00556875 + 0.0000778547]
W2 = [0.2135566612, 0.8428502266]  # w1 + 0.1 * m2 / (sqrt(v2) + 0.01), sqrt(v2) = [0.2185999566, 0.0751438931]


def test_weighted_average_weights_by_examples():
    # (1 * [0, 4] + 3 * [4, 0]) / 4 = [3, 1]
    out = weighted_average([{"w": np.array([0.0, 4.0])}, {"w": np.array([4.0, 0.0])}], [1, 3])

    np.testing.assert_array_equal(out["w"], [3.0, 1.0])


def test_weighted_average_keeps_the_dtype_and_rejects_zero_weight():
    arrays = [{"w": np.array([0.0, 4.0], dtype=np.float32)}, {"w": np.array([4.0, 0.0], dtype=np.float32)}]

    assert weighted_average(arrays, [1, 3])["w"].dtype == np.float32
    with pytest.raises(ValueError, match="sum to > 0"):
        weighted_average(arrays, [0, 0])
    with pytest.raises(ValueError, match="nothing to aggregate"):
        weighted_average([], [])


def test_fedavg_aggregate_weights_by_examples():
    updates = [_update(1, [0.0, 4.0], 1), _update(2, [4.0, 0.0], 3)]

    out = FedAvg().aggregate({"w": np.array([9.0, 9.0])}, updates)

    np.testing.assert_array_equal(out["w"], [3.0, 1.0])
    assert FedAvg().site_config() == {}


def test_fedprox_sends_proximal_mu_and_aggregates_like_fedavg():
    strategy = FedProx(proximal_mu=0.05)
    updates = [_update(1, [0.0, 4.0], 1), _update(2, [4.0, 0.0], 3)]

    assert strategy.site_config() == {"proximal-mu": 0.05}
    np.testing.assert_array_equal(strategy.aggregate({"w": np.array([9.0, 9.0])}, updates)["w"], [3.0, 1.0])


def test_fedadam_two_steps_match_hand_computation():
    strategy = _adam()

    w1 = strategy.aggregate(W0, ROUND1)
    np.testing.assert_allclose(strategy.m["w"], M1, rtol=1e-12)
    np.testing.assert_allclose(strategy.v["w"], V1, rtol=1e-12)
    np.testing.assert_allclose(w1["w"], W1, rtol=1e-12)

    w2 = strategy.aggregate(w1, ROUND2)
    # Round-2 literals are rounded to 10 decimals.
    np.testing.assert_allclose(strategy.m["w"], M2, rtol=1e-8)
    np.testing.assert_allclose(strategy.v["w"], V2, rtol=1e-8)
    np.testing.assert_allclose(w2["w"], W2, rtol=1e-8)


def test_fedadam_keeps_the_global_dtype():
    strategy = _adam()
    w0 = {"w": np.array([0.0, 1.0], dtype=np.float32)}

    out = strategy.aggregate(w0, [_update(1, [2.0, 1.0], 1)])

    assert out["w"].dtype == np.float32


def test_fedadam_state_dict_snapshot_resumes_to_the_same_next_step():
    original = _adam()
    w1 = original.aggregate(W0, ROUND1)
    snapshot = original.state_dict()
    w2 = original.aggregate(w1, ROUND2)  # the original goes on; the snapshot must not move with it

    resumed = _adam()
    resumed.load_state_dict(snapshot)

    np.testing.assert_array_equal(resumed.aggregate(w1, ROUND2)["w"], w2["w"])


def test_fedadam_state_survives_the_checkpoint_round_trip(tmp_path):
    original = _adam()
    w1 = original.aggregate(W0, ROUND1)
    run = RunDirectory.open_or_create(
        tmp_path, config_hash="h", config={}, base_model="b", code_version="t", rounds_planned=2
    )
    run.save_round(0, W0, adapter_config={}, record={})
    run.save_round(1, w1, adapter_config={}, record={}, server_state={"strategy": original.state_dict()})

    arrays, server_state = RunDirectory.open_or_create(
        tmp_path, config_hash="h", config={}, base_model="b", code_version="t", rounds_planned=2
    ).load_round(1)
    resumed = _adam()
    resumed.load_state_dict(server_state["strategy"])

    np.testing.assert_array_equal(resumed.aggregate(arrays, ROUND2)["w"], original.aggregate(w1, ROUND2)["w"])
    np.testing.assert_allclose(resumed.m["w"], M2, rtol=1e-8)


@pytest.mark.parametrize(
    ("name", "cls"),
    [(StrategyName.FEDAVG, FedAvg), (StrategyName.FEDPROX, FedProx), (StrategyName.FEDADAM, FedAdam)],
)
def test_make_strategy_picks_by_config(name, cls):
    cfg = FederationSection(strategy=name, proximal_mu=0.3, server_learning_rate=0.2, beta1=0.8, beta2=0.95, tau=0.05)

    strategy = make_strategy(cfg)

    assert type(strategy) is cls
    assert strategy.name is name
    if cls is FedProx:
        assert strategy.site_config() == {"proximal-mu": 0.3}
    if cls is FedAdam:
        assert (strategy.eta, strategy.beta1, strategy.beta2, strategy.tau) == (0.2, 0.8, 0.95, 0.05)


def test_average_metrics_weights_by_examples():
    pairs = [
        (1, {"train_loss": 1.0, "accuracy": 0.0, "only_here": 5.0, "server-round": 3.0}),
        (3, {"train_loss": 3.0, "accuracy": 1.0, "server-round": 3.0}),
    ]

    out = average_metrics(pairs)

    # loss (1*1 + 3*3) / 4 = 2.5, accuracy (1*0 + 3*1) / 4 = 0.75; keys not in every reply are dropped.
    assert out == {"accuracy": 0.75, "train_loss": 2.5, "num-examples": 4.0}


def test_average_metrics_accepts_site_updates():
    updates = [
        _update(1, [0.0], 1, train_loss=1.0, **{"num-examples": 1.0}),
        _update(2, [0.0], 3, train_loss=3.0, **{"num-examples": 3.0}),
    ]

    assert average_metrics(updates) == {"train_loss": 2.5, "num-examples": 4.0}
    assert average_metrics([]) == {}


@pytest.mark.parametrize("weights", [[100, -99], [0, 0], [float("nan"), 1]])
def test_weighted_average_refuses_weights_that_would_extrapolate_or_divide_by_zero(weights):
    arrays = [{"w": np.zeros(2, np.float32)}, {"w": np.ones(2, np.float32)}]

    with pytest.raises(ValueError, match="aggregation weights must"):
        weighted_average(arrays, weights)
