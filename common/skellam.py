"""The Skellam mechanism of distributed DP: its RDP, amplified by Poisson subsampling, and the
sensitivities of a randomly rounded record (common/accounting.py composes these into ε).

With `[privacy] noise = "distributed"` a round is one DP-FedSGD step (McMahan et al. 2018, one local
step per round): each site adds an integer noise share to the sum of its sampled records' rounded,
clipped contributions, and the coordinator sees only the sum over sites (SecAgg). The noise is
Skellam, Sk = Poisson(v/2) - Poisson(v/2) with variance v per coordinate, which is closed under sums:
t honest shares of variance v make exactly Sk of variance t·v (Agarwal, Kairouz and Liu, "The
Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021). Their Corollary 3.6
bounds its RDP at integer orders α > 1 for integer vectors whose difference has L2 norm <= Δ2 and L1
norm <= Δ1:

    ε(α) <= α Δ2² / (2v) + min( ((2α - 1) Δ2² + 6 Δ1) / (4v²),  3 Δ1 / (2v) )

A record is in a round's sum with probability q (Poisson sampling at the site); amplification uses
Zhu and Wang's general upper bound for Poisson-subsampled RDP at integer orders ("Poisson Subsampled
Renyi Differential Privacy", ICML 2019, Theorem 6), which holds for any mechanism, Skellam included.
Rounds and Gaussian releases compose by adding RDP at the same orders; (ε, δ) by Balle et al. 2020,
as Opacus does. Integer units throughout: Δ2 and Δ1 come from client-side conditional randomised
rounding (Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", ICML 2021, Sec. 4.1), `rounded_l2_bound`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

INTEGER_ORDERS: tuple[int, ...] = tuple(range(2, 257))
"""Orders of the distributed accounting: Zhu and Wang's subsampling bound is for integer orders. Up to 256:
at small ε the best order lies far above Opacus' 63 (measured: ε = 1 with 40 rounds at q = 0.3)."""


def rounded_l2_bound(l2: float, *, dim: int, beta: float) -> float:
    """L2 norm bound of a vector of L2 norm <= `l2` after randomised rounding to the integers in `dim`
    coordinates, conditioned on the bound (rounding is redrawn until it holds; `beta` bounds the chance
    that one draw fails). Kairouz, Liu and Steinke 2021, Sec. 4.1; never above l2 + sqrt(dim), which
    holds surely (each coordinate moves by less than 1)."""
    if not (l2 > 0 and math.isfinite(l2)) or dim < 1 or not 0 < beta < 1:
        raise ConfigError(f"need l2 > 0, dim >= 1 and beta in (0, 1), got {l2}, {dim}, {beta}.")
    conditional = l2**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (l2 + math.sqrt(dim) / 2)
    return min(l2 + math.sqrt(dim), math.sqrt(conditional))


def rounded_l1_bound(l2_bound: float, *, dim: int) -> float:
    """L1 bound of an integer vector of L2 norm <= `l2_bound`: |x| <= x² for integers, and Cauchy-Schwarz."""
    return min(l2_bound**2, math.sqrt(dim) * l2_bound)


def skellam_rdp(order: int, *, variance: float, l2_sensitivity: float, l1_sensitivity: float) -> float:
    """RDP of one Skellam release at integer `order` (Agarwal et al. 2021, Corollary 3.6)."""
    v, l2sq, l1 = variance, l2_sensitivity**2, l1_sensitivity
    return order * l2sq / (2 * v) + min(((2 * order - 1) * l2sq + 6 * l1) / (4 * v**2), 3 * l1 / (2 * v))


def poisson_subsampled_rdp(order: int, sample_rate: float, rdp: Callable[[int], float]) -> float:
    """Zhu and Wang 2019's upper bound on the RDP of a mechanism with RDP curve `rdp` run on a Poisson
    sample of rate `sample_rate`, at integer `order` >= 2; never above `rdp(order)` (subsampling
    cannot hurt: Rényi divergence is quasi-convex)."""
    q, a = sample_rate, int(order)
    if a != order or a < 2 or not 0 < q <= 1:
        raise ConfigError(f"need an integer order >= 2 and sample_rate in (0, 1], got {order} and {sample_rate}.")
    if q == 1:
        return rdp(a)
    log_q, log_1q = math.log(q), math.log1p(-q)
    terms = [
        (a - 1) * log_1q + math.log(a * q - q + 1),
        _log_comb(a, 2) + 2 * log_q + (a - 2) * log_1q + rdp(2),
    ]
    terms += [math.log(3) + _log_comb(a, j) + j * log_q + (a - j) * log_1q + (j - 1) * rdp(j) for j in range(3, a + 1)]
    top = max(terms)
    bound = (top + math.log(sum(math.exp(t - top) for t in terms))) / (a - 1)
    return min(bound, rdp(a))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


@functools.lru_cache(maxsize=1024)
def skellam_rdp_curve(variance: float, l2_sensitivity: float, l1_sensitivity: float, sample_rate: float) -> np.ndarray:
    """One subsampled Skellam release's RDP at `INTEGER_ORDERS`; cached (a ledger repeats its rounds)."""
    import numpy as np

    def one(order: int) -> float:
        return skellam_rdp(order, variance=variance, l2_sensitivity=l2_sensitivity, l1_sensitivity=l1_sensitivity)

    curve = np.array([poisson_subsampled_rdp(a, sample_rate, one) for a in INTEGER_ORDERS])
    curve.setflags(write=False)
    return curve
