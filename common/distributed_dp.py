"""Distributed DP's integer arithmetic, shared by the site (which adds its noise share) and the auditor.

With `[privacy] noise = "distributed"` a round is one DP-FedSGD step (McMahan et al. 2018): the site
Poisson-samples its records, clips each record's gradient to `max_grad_norm`, scales it to its share of
the update on the SecAgg grid (`grid_step`, the value of one integer), rounds it to integers with
conditional randomised rounding (Kairouz, Liu and Steinke 2021: redrawn until its L2 norm is within
`rounded_l2_bound`, so one record moves the integer sum by at most Δ2 in L2 and Δ1 in L1), sums the
records and adds a Skellam noise share (Agarwal, Kairouz and Liu 2021). Secure aggregation then adds
the sites' vectors mod M; only the sum is unmasked. The mechanism's RDP is in common/skellam.py, the
accounting in common/accounting.py.

Modular wrap. The sum is reduced mod M; that is post-processing of the noisy sum, so it never costs
privacy, only correctness. A site refuses to send a vector with a coordinate at or beyond M / (2 n)
for the n sites in its key list (`check_wrap`), so n such vectors cannot wrap.

Pure: numpy only; every random draw comes from the `np.random.Generator` the caller passes (the site's
is seeded from the OS CSPRNG each round, `fresh_numpy_generator`).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.accounting import BudgetFigure, SkellamEvent
from common.errors import ConfigError
from common.secagg import SecAggFailed
from common.skellam import rounded_l1_bound, rounded_l2_bound

ROUNDING_BETA = 1e-5
"""Chance that one randomised rounding draw exceeds the conditional bound (it is then redrawn)."""

MAX_ROUNDING_DRAWS = 64
"""Redraws before giving up (fail closed): each fails with probability <= ROUNDING_BETA, so 64 never do."""

MAX_L2_CLIP = float(1 << 40)
"""Largest contribution of one record, in integers: sums of many stay exact in int64 (2^63) and in float64
rounding (2^53). A finer grid from the coordinator is refused before anything is spent."""

MIN_L2_CLIP = 1.0
"""Smallest: below one integer, rounding noise (up to sqrt(dim)/2) would swamp the contribution."""

SEED_BITS = 128
"""Entropy of a round's numpy generator (PCG64 takes 128 bits)."""


def fresh_numpy_generator() -> np.random.Generator:
    """A numpy generator seeded from the OS CSPRNG: unpredictable, new every call, never global."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(SEED_BITS)))


@dataclass(frozen=True)
class DistributedRound:
    """One distributed round's mechanism, in integer units; what the ledger records about it.

    `share_variance` is this site's own Skellam variance per coordinate; `min_honest` (t) shares are
    counted against a coordinator that sees only the sum."""

    min_honest: int
    noise_multiplier: float  # std of the counted noise, in units of l2_sensitivity
    share_variance: float
    l2_clip: float  # one record's contribution before rounding, integer units
    l2_sensitivity: float
    l1_sensitivity: float
    dim: int
    grid_step: float
    sample_rate: float
    budget_figure: BudgetFigure

    def event(self, figure: BudgetFigure) -> SkellamEvent:
        """The round as the accountant sees it under `figure`: t shares counted, or the site's own."""
        counted = self.min_honest if BudgetFigure(figure) is BudgetFigure.SUM else 1
        return SkellamEvent(
            counted * self.share_variance, self.l2_sensitivity, self.l1_sensitivity, self.sample_rate, 1
        )

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "budget_figure": str(self.budget_figure)}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> DistributedRound:
        return cls(**{**data, "budget_figure": BudgetFigure(data["budget_figure"])})


def plan_distributed_round(
    *,
    noise_multiplier: float,
    min_honest: int,
    budget_figure: BudgetFigure,
    learning_rate: float,
    max_grad_norm: float,
    expected_batch: float,
    grid_step: float,
    dim: int,
    sample_rate: float,
) -> DistributedRound:
    """The round's sensitivities and this site's noise share, from the site's own settings; the
    coordinator contributes only `grid_step` (the value of one integer), which moves Δ2 and the noise
    together, so no value of it lowers the noise relative to one record's contribution."""
    if not (grid_step > 0 and math.isfinite(grid_step)):
        raise SecAggFailed(f"the secagg grid step must be a finite number > 0, got {grid_step}")
    if min_honest < 1:
        raise ConfigError(f"`distributed_min_honest` must be >= 1, got {min_honest}.")
    l2_clip = learning_rate * max_grad_norm / (expected_batch * grid_step)
    if not MIN_L2_CLIP <= l2_clip <= MAX_L2_CLIP:
        raise SecAggFailed(
            f"the secagg grid step {grid_step:g} puts one record's contribution at {l2_clip:g} integers, outside "
            f"[{MIN_L2_CLIP:g}, {MAX_L2_CLIP:g}]: ask the coordinator for another `secagg.clip` / `quantization_range`"
        )
    l2 = rounded_l2_bound(l2_clip, dim=dim, beta=ROUNDING_BETA)
    counted_variance = (noise_multiplier * l2) ** 2
    counted = min_honest if BudgetFigure(budget_figure) is BudgetFigure.SUM else 1
    return DistributedRound(
        min_honest=min_honest,
        noise_multiplier=noise_multiplier,
        share_variance=counted_variance / counted,
        l2_clip=l2_clip,
        l2_sensitivity=l2,
        l1_sensitivity=rounded_l1_bound(l2, dim=dim),
        dim=dim,
        grid_step=grid_step,
        sample_rate=sample_rate,
        budget_figure=BudgetFigure(budget_figure),
    )


def conditional_round(x: np.ndarray, *, bound: float, rng: np.random.Generator) -> np.ndarray:
    """`x` rounded to the integers, unbiased per coordinate, redrawn until its L2 norm is <= `bound`."""
    low = np.floor(x)
    frac = x - low
    for _ in range(MAX_ROUNDING_DRAWS):
        rounded = low + (rng.random(x.shape) < frac)
        if float(np.sqrt(np.square(rounded).sum())) <= bound:
            return rounded.astype(np.int64)
    raise SecAggFailed(f"randomised rounding exceeded its norm bound {MAX_ROUNDING_DRAWS} times")


def skellam_noise(size: int, *, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Symmetric Skellam noise, Poisson(v/2) - Poisson(v/2): integers of variance `variance` each."""
    if not (variance > 0 and math.isfinite(variance)):
        raise SecAggFailed(f"a Skellam share needs a finite variance > 0, got {variance}")
    return rng.poisson(variance / 2, size).astype(np.int64) - rng.poisson(variance / 2, size).astype(np.int64)


def check_wrap(values: np.ndarray, *, modulus: int, sites: int) -> None:
    """Refuse a vector `sites` of which could wrap around the modulus when summed."""
    limit = modulus // (2 * max(sites, 1))
    if values.size and int(np.abs(values).max()) >= limit:
        raise SecAggFailed(
            f"a noisy coordinate reaches {int(np.abs(values).max())}, beyond M / (2 x {sites} sites) = {limit}: "
            "raise `secagg.modulus` or coarsen the grid"
        )
