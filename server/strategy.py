"""Aggregation of site adapters: FedAvg (weighted by examples), FedProx, FedAdam.

The arithmetic is pure numpy over {tensor name: array} so it can be checked by hand; the strategy
classes keep whatever state must survive a coordinator restart (FedAdam's moments) in a
`state_dict()` that the checkpoint saves each round.

- FedAvg (McMahan et al. 2017): w = sum_k n_k w_k / sum_k n_k.
- FedProx (Li et al. 2020): FedAvg aggregation; the sites add the proximal term, with `mu` sent in
  each round's config.
- FedAdam (Reddi et al. 2021, Algorithm 2, no bias correction): with the averaged pseudo-gradient
  d = avg_k(w_k) - w, m = b1 m + (1-b1) d, v = b2 v + (1-b2) d^2, w += eta m / (sqrt(v) + tau).

Every strategy first combines the sites' adapters with its `aggregator` (`[security] aggregator`):
the example-weighted mean, or, for federations that fear faulty or hostile sites, a coordinate-wise
trimmed mean or median (Yin et al. 2018), unweighted so that one site cannot buy influence with a
claimed example count. FedAdam then steps towards whatever was combined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.arrays import Arrays
from common.config import Aggregator, FederationSection, SecuritySection, StrategyName
from common.errors import ConfigError
from common.manifest import SiteEntry


@dataclass(frozen=True)
class SiteUpdate:
    """One site's accepted reply for a round."""

    node_id: int
    site_id: str
    arrays: Arrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    # Its manifest record: hashes and norm the gate computed, the site's declarations; never raw values.
    entry: SiteEntry | None = None


def weighted_average(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    if not arrays:
        raise ValueError("nothing to aggregate")
    # The gate admits only positive integer example counts; this keeps a caller that skipped it from
    # extrapolating (a negative weight pushes the mean past every site) or dividing by zero.
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"aggregation weights must be finite and >= 0, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregation weights must sum to > 0, got {list(weights)}")
    out: Arrays = {}
    for key in arrays[0]:
        acc = np.zeros_like(arrays[0][key], dtype=np.float64)
        for a, w in zip(arrays, weights, strict=True):
            acc += a[key].astype(np.float64) * (w / total)
        out[key] = acc.astype(arrays[0][key].dtype)
    return out


def trimmed_mean(arrays: Sequence[Arrays], *, trim_fraction: float) -> Arrays:
    """Coordinate-wise: sort the n site values, drop floor(trim_fraction * n) from each end, average."""
    if not arrays:
        raise ValueError("nothing to aggregate")
    cut = trimmed_per_side(len(arrays), trim_fraction)
    out: Arrays = {}
    for key in arrays[0]:
        stacked = np.sort(np.stack([a[key].astype(np.float64) for a in arrays]), axis=0)
        out[key] = stacked[cut : len(arrays) - cut].mean(axis=0).astype(arrays[0][key].dtype)
    return out


def trimmed_per_side(n: int, trim_fraction: float) -> int:
    return int(np.floor(trim_fraction * n))


def coordinate_median(arrays: Sequence[Arrays]) -> Arrays:
    """Coordinate-wise median (the mean of the two middle values when n is even)."""
    if not arrays:
        raise ValueError("nothing to aggregate")
    return {
        key: np.median(np.stack([a[key].astype(np.float64) for a in arrays]), axis=0).astype(arrays[0][key].dtype)
        for key in arrays[0]
    }


def average_metrics(updates: Sequence[SiteUpdate] | Sequence[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Example-weighted mean of every metric all replies share (`num-examples` is summed)."""
    pairs = [(u.num_examples, u.metrics) if isinstance(u, SiteUpdate) else u for u in updates]
    if not pairs:
        return {}
    keys = set.intersection(*(set(m) for _, m in pairs)) - {"num-examples", "server-round"}
    total = sum(n for n, _ in pairs) or 1
    out = {k: sum(n * float(m[k]) for n, m in pairs) / total for k in sorted(keys)}
    out["num-examples"] = float(sum(n for n, _ in pairs))
    return out


class FedAvg:
    name = StrategyName.FEDAVG
    aggregator = Aggregator.MEAN
    trim_fraction = 0.0

    def site_config(self) -> dict[str, Any]:
        """Extra values sent to the sites with each training round."""
        return {}

    def combine(self, updates: Sequence[SiteUpdate]) -> Arrays:
        """The sites' adapters combined by this strategy's aggregator."""
        arrays = [u.arrays for u in updates]
        if self.aggregator is Aggregator.TRIMMED_MEAN:
            return trimmed_mean(arrays, trim_fraction=self.trim_fraction)
        if self.aggregator is Aggregator.MEDIAN:
            return coordinate_median(arrays)
        return weighted_average(arrays, [u.num_examples for u in updates])

    def aggregate(self, global_arrays: Arrays, updates: Sequence[SiteUpdate]) -> Arrays:
        return self.combine(updates)

    def aggregate_combined(self, global_arrays: Arrays, combined: Arrays) -> Arrays:
        """The new global adapter from an already combined one (central DP combines and noises it)."""
        return combined

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FedProx(FedAvg):
    name = StrategyName.FEDPROX

    def __init__(self, *, proximal_mu: float) -> None:
        self.proximal_mu = proximal_mu

    def site_config(self) -> dict[str, Any]:
        return {"proximal-mu": self.proximal_mu}


class FedAdam(FedAvg):
    name = StrategyName.FEDADAM

    def __init__(self, *, server_learning_rate: float, beta1: float, beta2: float, tau: float) -> None:
        self.eta, self.beta1, self.beta2, self.tau = server_learning_rate, beta1, beta2, tau
        self.m: Arrays = {}
        self.v: Arrays = {}

    def aggregate(self, global_arrays: Arrays, updates: Sequence[SiteUpdate]) -> Arrays:
        return self.aggregate_combined(global_arrays, self.combine(updates))

    def aggregate_combined(self, global_arrays: Arrays, combined: Arrays) -> Arrays:
        avg = combined
        out: Arrays = {}
        for key, w in global_arrays.items():
            d = avg[key].astype(np.float64) - w.astype(np.float64)
            m = self.beta1 * self.m.get(key, np.zeros_like(d)) + (1 - self.beta1) * d
            v = self.beta2 * self.v.get(key, np.zeros_like(d)) + (1 - self.beta2) * d * d
            self.m[key], self.v[key] = m, v
            out[key] = (w.astype(np.float64) + self.eta * m / (np.sqrt(v) + self.tau)).astype(w.dtype)
        return out

    def state_dict(self) -> dict[str, Any]:
        """A snapshot: copies, so later rounds do not change a state already handed to the checkpoint."""
        return {"m": {k: a.copy() for k, a in self.m.items()}, "v": {k: a.copy() for k, a in self.v.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = dict(state.get("m", {}))
        self.v = dict(state.get("v", {}))


def make_strategy(cfg: FederationSection, security: SecuritySection | None = None) -> FedAvg:
    strategy = _strategy(cfg)
    if security is not None:
        strategy.aggregator, strategy.trim_fraction = security.aggregator, security.trim_fraction
    return strategy


def _strategy(cfg: FederationSection) -> FedAvg:
    if cfg.strategy is StrategyName.FEDAVG:
        return FedAvg()
    if cfg.strategy is StrategyName.FEDPROX:
        return FedProx(proximal_mu=cfg.proximal_mu)
    if cfg.strategy is StrategyName.FEDADAM:
        return FedAdam(server_learning_rate=cfg.server_learning_rate, beta1=cfg.beta1, beta2=cfg.beta2, tau=cfg.tau)
    raise ConfigError(f"`federation.strategy` {cfg.strategy!r} is not implemented")
