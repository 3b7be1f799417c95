"""Privacy accounting over a recorded history of DP-SGD events.

One concept, both directions: the ε a history of DP releases spends (composition and the RDP -> (ε, δ)
conversion, with the independent dp_accounting cross-check beside Opacus), and its inverse, the σ that
keeps a planned history under a target ε. The distributed rounds' mechanism (Skellam RDP, subsampling,
rounding bounds) is common/skellam.py; this module composes it with the Gaussian releases.

A history is what Opacus' accountants keep in `accountant.history`: a sequence of
`(noise_multiplier, sample_rate, steps)` triples, one per run of identical steps. Each step is a
Poisson-subsampled Gaussian mechanism; the history composes in any order.

Which ε a number means depends on the accountant AND the RDP -> (ε, δ) conversion, so every ε we
record names both:

- `EpsilonConversion.BALLE2020`: Balle et al. 2020, "Hypothesis testing interpretations and Renyi
  differential privacy", Thm. 21: `ε = rdp - (log δ + log α)/(α - 1) + log((α - 1)/α)`. This is what
  Opacus 1.6 `opacus/accountants/analysis/rdp.py::get_privacy_spent` computes, and Google's
  `dp_accounting` too.
- `EpsilonConversion.CLASSIC`: Mironov 2017, Prop. 3: `ε = rdp - log δ / (α - 1)`; what TF-Privacy's
  tables and the older Opacus/TF-Privacy READMEs print (3.01 for the MNIST example).

The PRV accountant (Gopi et al. 2021) computes (ε, δ) directly; it has no conversion (`None`).

Opacus and dp_accounting are imported inside the functions that need them: importing Opacus pulls in
torch (~2 s), which `silo budget` and config loading should not pay.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from common.errors import ConfigError
from common.skellam import INTEGER_ORDERS, skellam_rdp_curve

if TYPE_CHECKING:
    import numpy as np


class Accountant(StrEnum):
    """Opacus accountant used to compose the history."""

    RDP = "rdp"
    PRV = "prv"


class EpsilonConversion(StrEnum):
    """RDP -> (ε, δ) conversion (RDP accountant only)."""

    CLASSIC = "classic"
    BALLE2020 = "balle2020"


class DPEvent(NamedTuple):
    """`steps` Poisson-subsampled Gaussian steps; a plain tuple, as in Opacus' `accountant.history`."""

    noise_multiplier: float
    sample_rate: float
    steps: int


class SkellamEvent(NamedTuple):
    """`steps` Poisson-subsampled Skellam releases of one record's rounded contribution, integer units:
    noise `variance` per coordinate counted as protecting the record, its L2 and L1 sensitivities."""

    variance: float
    l2_sensitivity: float
    l1_sensitivity: float
    sample_rate: float
    steps: int


History = Iterable[tuple[float, float, int] | SkellamEvent]
"""Gaussian events `(noise_multiplier, sample_rate, steps)`, and any distributed round as a `SkellamEvent`."""


def split_history(history: History) -> tuple[list[tuple[float, float, int]], list[SkellamEvent]]:
    """(Gaussian events, Skellam events) of a mixed history."""
    gaussian: list[tuple[float, float, int]] = []
    skellam: list[SkellamEvent] = []
    for event in history:
        if isinstance(event, SkellamEvent):
            skellam.append(event)
        else:
            gaussian.append(event)
    return gaussian, skellam


RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
"""Opacus 1.6 `RDPAccountant.DEFAULT_ALPHAS`, copied so that the cross-check uses the same orders."""

PRV_EPS_ERROR = 0.01
"""PRV accountant's ε discretisation error; we record its upper bound (Opacus' default)."""

MAX_NOISE_MULTIPLIER = 1e4
"""Beyond this σ the noise search gives up: the target is unreachable in practice."""

NOISE_SEARCH_EPSILON_TOLERANCE = 0.01
"""The searched σ spends within this much ε below the target (Opacus' `epsilon_tolerance`)."""


def default_conversion(accountant: Accountant) -> EpsilonConversion | None:
    """The conversion Opacus 1.6 applies for `accountant` (Balle et al. 2020 for RDP; none for PRV)."""
    return EpsilonConversion.BALLE2020 if Accountant(accountant) is Accountant.RDP else None


def _check_conversion(accountant: Accountant, conversion: EpsilonConversion | None) -> None:
    if Accountant(accountant) is Accountant.PRV and conversion is not None:
        raise ConfigError(f"`conversion` applies to the rdp accountant only; got {conversion!r} with prv.")
    if Accountant(accountant) is Accountant.RDP and conversion is None:
        raise ConfigError("`conversion` is required with the rdp accountant, got None.")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ConfigError(f"`delta` must be in (0, 1), got {delta}.")


def compact_history(history: History) -> list[DPEvent]:
    """Validate events and merge those with equal (σ, q); drop events that spend nothing.

    Composition is commutative, so merging is exact and keeps the accountants fast over long ledgers.
    """
    merged: dict[tuple[float, float], int] = {}
    for raw in history:
        noise_multiplier, sample_rate, steps = (float(raw[0]), float(raw[1]), raw[2])
        if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"`noise_multiplier` must be a finite number >= 0, got {noise_multiplier}.")
        if not 0 <= sample_rate <= 1:
            raise ConfigError(f"`sample_rate` must be in [0, 1], got {sample_rate}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"`steps` must be an integer >= 0, got {steps!r}.")
        if steps == 0 or sample_rate == 0:
            continue
        key = (noise_multiplier, sample_rate)
        merged[key] = merged.get(key, 0) + steps
    return [DPEvent(s, q, n) for (s, q), n in merged.items()]


def compute_epsilon(
    history: History,
    *,
    delta: float,
    accountant: Accountant = Accountant.RDP,
    conversion: EpsilonConversion | None = EpsilonConversion.BALLE2020,
) -> float:
    """ε spent by the whole `history` at `delta`, with Opacus' accountant.

    Returns 0.0 for an empty history and `inf` when any event has `noise_multiplier == 0` (a round
    trained without DP). For PRV pass `conversion=None`; the value is the accountant's upper bound.
    """
    accountant = Accountant(accountant)
    _check_delta(delta)
    _check_conversion(accountant, conversion)
    history, skellam = split_history(history)
    if skellam:
        if accountant is not Accountant.RDP or conversion is not EpsilonConversion.BALLE2020:
            raise ConfigError("distributed (Skellam) rounds are accounted with rdp and the balle2020 conversion only.")
        return compute_epsilon_distributed(history, skellam, delta=delta)
    events = compact_history(history)
    if not events:
        return 0.0
    if any(e.noise_multiplier == 0 for e in events):
        return math.inf
    import numpy as np

    if accountant is Accountant.PRV:
        from opacus.accountants import PRVAccountant

        prv = PRVAccountant()
        prv.history = [tuple(e) for e in events]
        # At q = 1 (every record in every step) Opacus' PRV takes log(1 - q) = -inf on purpose, and numpy warns
        # "divide by zero" to whoever runs it: a site operator would read that as a fault. Nothing else is hidden.
        with np.errstate(divide="ignore"):
            return float(prv.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR))

    rdp = np.sum([e.steps * _rdp_per_step(e.noise_multiplier, e.sample_rate) for e in events], axis=0)
    return _rdp_to_epsilon(rdp, delta=delta, conversion=EpsilonConversion(conversion or "balle2020"))


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP curve of one step; cached because a ledger repeats the same (σ, q) every round.

    `compute_rdp(..., steps=n)` is `n * compute_rdp(..., steps=1)` in Opacus, so this is exact.
    """
    from opacus.accountants.analysis import rdp as opacus_rdp

    curve = opacus_rdp.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS))
    curve.setflags(write=False)  # shared by every caller through the cache
    return curve


def _rdp_to_epsilon(rdp: np.ndarray, *, delta: float, conversion: EpsilonConversion) -> float:
    import numpy as np

    orders = np.asarray(RDP_ORDERS, dtype=float)
    if conversion is EpsilonConversion.CLASSIC:
        return float(np.nanmin(rdp - math.log(delta) / (orders - 1)))
    from opacus.accountants.analysis import rdp as opacus_rdp

    epsilon, _order = opacus_rdp.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


def find_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant = Accountant.RDP,
    conversion: EpsilonConversion | None = EpsilonConversion.BALLE2020,
    epsilon_tolerance: float = NOISE_SEARCH_EPSILON_TOLERANCE,
    extra_events: Sequence[DPEvent] = (),
) -> float:
    """Smallest σ (to `epsilon_tolerance` in ε) such that `steps` steps at `sample_rate` spend <= target,
    composed with `extra_events` (fixed releases planned beside the training, e.g. evaluations).

    Bisection in σ on `compute_epsilon` itself, with the same accountant and conversion the ledger will
    record: the returned σ has been evaluated and never overshoots `target_epsilon`.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"`target_epsilon` must be a finite number > 0, got {target_epsilon}.")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"`sample_rate` must be in (0, 1], got {sample_rate}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"`steps` must be an integer >= 1, got {steps!r}.")
    if not epsilon_tolerance > 0:
        raise ConfigError(f"`epsilon_tolerance` must be > 0, got {epsilon_tolerance}.")

    def spend(sigma: float) -> float:
        events = [DPEvent(sigma, sample_rate, steps), *extra_events]
        return compute_epsilon(events, delta=delta, accountant=accountant, conversion=conversion)

    where = f"at delta={delta}, sample_rate={sample_rate}, steps={steps}"
    return _smallest_sigma(
        spend, target_epsilon=target_epsilon, tolerance=epsilon_tolerance, where=where, releases=len(extra_events)
    )


def _smallest_sigma(
    spend: Callable[[float], float], *, target_epsilon: float, tolerance: float, where: str, releases: int = 0
) -> float:
    """Bisection in σ on `spend` (ε, decreasing in σ): the smallest σ found with spend <= target.
    `releases`: how many fixed releases `spend` composes beside training (named when they alone exceed it)."""
    sigma_low, sigma_high = 0.0, 1.0
    eps_high = spend(sigma_high)
    while eps_high > target_epsilon:
        sigma_low, sigma_high = sigma_high, 2 * sigma_high
        if sigma_high > MAX_NOISE_MULTIPLIER:
            beside = (
                f"; the {releases} releases planned beside training (evaluation answers at "
                "`eval_noise_multiplier`) spend about that on their own: plan fewer rounds, or raise "
                "`eval_noise_multiplier` or the target"
                if releases
                else ""
            )
            raise ConfigError(
                f"`target_epsilon` {target_epsilon} is unreachable {where}: even "
                f"noise_multiplier={MAX_NOISE_MULTIPLIER:g} spends {spend(sigma_high):.2f}{beside}."
            )
        eps_high = spend(sigma_high)
    # Stop on ε tolerance, or when σ is pinned to 1e-6 relative (ε can be flat in σ at the bottom).
    while target_epsilon - eps_high > tolerance and sigma_high - sigma_low > 1e-6 * sigma_high:
        sigma = (sigma_low + sigma_high) / 2
        eps = spend(sigma)
        if eps <= target_epsilon:
            sigma_high, eps_high = sigma, eps
        else:
            sigma_low = sigma
    return sigma_high


def compute_epsilon_dp_accounting(
    history: History,
    *,
    delta: float,
    conversion: EpsilonConversion = EpsilonConversion.BALLE2020,
) -> float:
    """Independent cross-check of RDP `compute_epsilon` with Google's `dp_accounting`.

    Each event is `SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)` composed
    into an `RdpAccountant` over the same orders (add-or-remove-one neighbours, as Opacus assumes).
    """
    import dp_accounting
    import numpy as np
    from dp_accounting import rdp as dpa_rdp

    _check_delta(delta)
    conversion = EpsilonConversion(conversion)
    history, skellam = split_history(history)
    if skellam:
        if conversion is not EpsilonConversion.BALLE2020:
            raise ConfigError("distributed (Skellam) rounds are accounted with the balle2020 conversion only.")
        return compute_epsilon_distributed(history, skellam, delta=delta, gaussian_rdp="dp_accounting")
    rdp_accountant = dpa_rdp.RdpAccountant(
        orders=list(RDP_ORDERS), neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    for event in compact_history(history):
        rdp_accountant.compose(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    event.sample_rate, dp_accounting.GaussianDpEvent(event.noise_multiplier)
                ),
                event.steps,
            )
        )
    if conversion is EpsilonConversion.BALLE2020:
        return float(rdp_accountant.get_epsilon(delta))
    # dp_accounting converts with Balle et al. only; its RDP curve has no public getter.
    rdp = np.asarray(rdp_accountant._rdp, dtype=float)
    orders = np.asarray(RDP_ORDERS, dtype=float)
    return float(np.min(rdp - math.log(delta) / (orders - 1)))


# ---- distributed noise: Skellam rounds under secure aggregation (the mechanism: common/skellam.py) ----


class NoiseModel(StrEnum):
    """Where a site's DP noise is added: all of it at the site, or its share, summed under SecAgg."""

    LOCAL = "local"
    DISTRIBUTED = "distributed"


class BudgetFigure(StrEnum):
    """Which of a distributed round's two ε figures the site's budget is enforced on."""

    SUM = "sum"  # against a coordinator that sees only the sum, assuming >= t honest sites add their share
    OWN_NOISE = "own-noise"  # relying on this site's own noise share alone


def compute_epsilon_distributed(
    gaussian: Iterable[tuple[float, float, int]],
    skellam: Iterable[SkellamEvent],
    *,
    delta: float,
    gaussian_rdp: str = "opacus",
) -> float:
    """ε at `delta` of Gaussian releases (DP-SGD rounds, evaluation answers) composed with Skellam
    rounds, RDP at `INTEGER_ORDERS`, Balle et al. 2020 conversion. `gaussian_rdp`: whose sampled-
    Gaussian RDP to use, "opacus" (the site) or "dp_accounting" (the auditor's independent check)."""
    import numpy as np

    _check_delta(delta)
    orders = list(INTEGER_ORDERS)
    rdp = np.zeros(len(orders))
    events = compact_history(gaussian)
    if any(e.noise_multiplier == 0 for e in events):
        return math.inf
    if events:
        rdp += _gaussian_rdp_at_integer_orders(tuple(events), gaussian_rdp)
    merged: dict[tuple[float, float, float, float], int] = {}
    for event in skellam:
        if event.steps == 0 or event.sample_rate == 0:
            continue
        if not (event.variance > 0 and event.l2_sensitivity > 0 and event.l1_sensitivity > 0):
            raise ConfigError(f"a Skellam event needs variance and sensitivities > 0, got {event}.")
        key = (float(event.variance), float(event.l2_sensitivity), float(event.l1_sensitivity), event.sample_rate)
        merged[key] = merged.get(key, 0) + int(event.steps)
    for key, steps in merged.items():
        rdp += steps * skellam_rdp_curve(*key)
    if not rdp.any():
        return 0.0
    import warnings

    from opacus.accountants.analysis import rdp as opacus_rdp

    with warnings.catch_warnings():
        # Integer orders only (the subsampling bound's): at large ε the best order would be below 2, and
        # Opacus says so; the bound stays valid, only looser.
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        epsilon, _order = opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(epsilon)


@functools.lru_cache(maxsize=1024)
def _gaussian_rdp_at_integer_orders(events: tuple[DPEvent, ...], backend: str) -> np.ndarray:
    import numpy as np

    orders = list(INTEGER_ORDERS)
    if backend == "dp_accounting":
        import dp_accounting
        from dp_accounting import rdp as dpa_rdp

        accountant = dpa_rdp.RdpAccountant(
            orders=[float(a) for a in orders], neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        for e in events:
            inner = dp_accounting.PoissonSampledDpEvent(
                e.sample_rate, dp_accounting.GaussianDpEvent(e.noise_multiplier)
            )
            accountant.compose(dp_accounting.SelfComposedDpEvent(inner, e.steps))
        return np.asarray(accountant._rdp, dtype=float)
    if backend != "opacus":
        raise ConfigError(f"`gaussian_rdp` must be 'opacus' or 'dp_accounting', got {backend!r}.")
    from opacus.accountants.analysis import rdp as opacus_rdp

    return np.sum(
        [
            opacus_rdp.compute_rdp(q=e.sample_rate, noise_multiplier=e.noise_multiplier, steps=e.steps, orders=orders)
            for e in events
        ],
        axis=0,
    )


def find_distributed_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    l2_sensitivity: float,
    l1_sensitivity: float,
    extra_events: Sequence[DPEvent] = (),
    epsilon_tolerance: float = NOISE_SEARCH_EPSILON_TOLERANCE,
) -> float:
    """Smallest σ (to `epsilon_tolerance` in ε) such that `rounds` Skellam rounds with counted noise of
    variance (σ Δ2)², composed with `extra_events`, spend <= `target_epsilon`; never overshoots. σ is in
    units of Δ2, the std of the noise the figure counts (every honest share, or the site's own alone)."""
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"`target_epsilon` must be a finite number > 0, got {target_epsilon}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"`rounds` must be an integer >= 1, got {rounds!r}.")

    def spend(sigma: float) -> float:
        event = SkellamEvent((sigma * l2_sensitivity) ** 2, l2_sensitivity, l1_sensitivity, sample_rate, rounds)
        return compute_epsilon_distributed(list(extra_events), [event], delta=delta)

    where = f"with distributed noise at delta={delta}, sample_rate={sample_rate}, rounds={rounds}"
    return _smallest_sigma(
        spend, target_epsilon=target_epsilon, tolerance=epsilon_tolerance, where=where, releases=len(extra_events)
    )
