"""Central (site-level) differential privacy at the coordinator, with its own accountant.

DP-FedAvg with fixed clipping (McMahan et al. 2018, "Learning differentially private recurrent
language models"; Andrew et al. 2021 without the adaptive part):

    delta_k = w_k - w                       each site's update
    delta_k *= min(1, clip / ||delta_k||_2)  so one site moves the sum by at most `clip`
    w' = w + (1/n) sum_k delta_k + N(0, (noise_multiplier * clip / n)^2 I)

The unit of privacy is a whole site: (ε, δ) bounds what the released global adapters reveal about
whether any one site took part. Every round asks every connected site, so each round is one Gaussian
mechanism with sample rate q = sites sampled / sites in the federation = 1.0; n, the number of sites
aggregated, is treated as public (the manifest lists them anyway). The rounds compose in
`common.accounting` (Opacus' RDP or PRV accountant), rebuilt from the manifest when a run resumes.

This guards against what the coordinator *releases*; it does not hide a site's update from the
coordinator itself (that is what each site's own DP-SGD and SecAgg are for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.accounting import Accountant, EpsilonConversion, compute_epsilon
from common.arrays import Arrays, clip_delta
from common.config import CentralDPSection

# Every connected site is asked every round (no client sampling): the Gaussian mechanism's q.
SAMPLE_RATE = 1.0


def noise_std(*, noise_multiplier: float, clip: float, sites: int) -> float:
    """Per-coordinate std of the noise added to the mean of `sites` clipped deltas."""
    return noise_multiplier * clip / sites


class CentralDP:
    """Clips, averages and noises the sites' deltas; keeps the round history for the accountant."""

    def __init__(self, cfg: CentralDPSection, *, rng: np.random.Generator | None = None) -> None:
        self.cfg = cfg
        # OS entropy, never the federation's seed: noise anyone can regenerate protects nothing.
        self.rng = rng if rng is not None else np.random.default_rng()
        self.history: list[tuple[float, float, int]] = []

    def aggregate(self, global_arrays: Arrays, site_arrays: Sequence[Arrays]) -> tuple[Arrays, dict[str, Any]]:
        """The noised mean of the clipped site adapters (as a full adapter, not a delta), and the
        round's record for the manifest. Adds this round to the history."""
        n = len(site_arrays)
        if n == 0:
            raise ValueError("nothing to aggregate")
        clip, z = self.cfg.clip, self.cfg.noise_multiplier
        total = {k: np.zeros(w.shape, dtype=np.float64) for k, w in global_arrays.items()}
        norms, clipped = [], 0
        for arrays in site_arrays:
            delta, norm = clip_delta(
                {k: arrays[k].astype(np.float64) - w.astype(np.float64) for k, w in global_arrays.items()}, clip
            )
            norms.append(norm)
            clipped += norm > clip
            for k in total:
                total[k] += delta[k]
        std = noise_std(noise_multiplier=z, clip=clip, sites=n)
        out = {
            k: (w.astype(np.float64) + total[k] / n + self.rng.normal(0.0, std, size=w.shape)).astype(w.dtype)
            for k, w in global_arrays.items()
        }
        self.history.append((z, SAMPLE_RATE, 1))
        record = {
            "noise_multiplier": z,
            "clip": clip,
            "sites": n,
            "noise_std": std,
            "sites_clipped": int(clipped),
            "update_norms": norms,
            "sample_rate": SAMPLE_RATE,
            "unit": "site",
            "epsilon_round": self.epsilon([(z, SAMPLE_RATE, 1)]),
            "epsilon_total": self.epsilon(self.history),
            "delta": self.cfg.delta,
            "accountant": str(self.cfg.accountant),
            "conversion": str(self.cfg.conversion) or None,
        }
        return out, record

    def epsilon(self, history: Sequence[tuple[float, float, int]]) -> float:
        accountant = Accountant(self.cfg.accountant)
        conversion = EpsilonConversion(self.cfg.conversion) if accountant is Accountant.RDP else None
        return compute_epsilon(history, delta=self.cfg.delta, accountant=accountant, conversion=conversion)

    def load_history(self, rounds: Sequence[dict[str, Any]]) -> None:
        """Rebuild the history from the manifest's round entries (a resumed run keeps its ε)."""
        self.history = [
            (float(r["central_dp"]["noise_multiplier"]), float(r["central_dp"]["sample_rate"]), 1)
            for r in rounds
            if isinstance(r.get("central_dp"), dict)
        ]
