"""One DP round, planned once: what the ledger reserves, the trainer runs and the privacy engine wraps.

`plan_dp_round(cfg, dataset_size)` fixes the round's batch, steps, sample rate, noise multiplier and
clipping norm from the site's configuration; `RoundId` names the round in the ledger and the seal.
Everything downstream reads these two values instead of recomputing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from client.privacy import planned_sample_rate
from client.train import round_plan_steps
from common.accounting import DPEvent
from common.config import SiteConfig


@dataclass(frozen=True)
class RoundId:
    """Which round of which run at which site: the key of its ledger entries and its seal."""

    run_id: str
    round: int
    site_id: str

    def fields(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "round": self.round, "site_id": self.site_id}


@dataclass(frozen=True)
class DPPlan:
    dataset_size: int
    batch_size: int
    steps: int
    sample_rate: float
    noise_multiplier: float  # 0 without DP (the ledger then records epsilon = inf)
    max_grad_norm: float | None  # None without DP
    dp_enabled: bool

    @property
    def event(self) -> DPEvent:
        return DPEvent(self.noise_multiplier, self.sample_rate, self.steps)


def plan_dp_round(cfg: SiteConfig, dataset_size: int) -> DPPlan:
    """The round `cfg` trains on `dataset_size` records: `[training]` gives batch and steps, `[privacy]`
    the noise multiplier that spends `target_epsilon` over the planned rounds and evaluations."""
    privacy = cfg.privacy
    batch_size, steps = round_plan_steps(dataset_size, cfg.training)
    sample_rate = planned_sample_rate(dataset_size=dataset_size, batch_size=batch_size)
    sigma = privacy.resolve_noise_multiplier(sample_rate=sample_rate, steps_per_round=steps)
    return DPPlan(
        dataset_size=dataset_size,
        batch_size=batch_size,
        steps=steps,
        sample_rate=sample_rate,
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm if privacy.enabled else None,
        dp_enabled=privacy.enabled,
    )
