"""A reserved round: the `RoundPlan` that `Ledger.plan_round` checked and wrote and the site carries
through training to `Ledger.record_round`, and the check that what the accountant counted during
training stayed within it (otherwise the ledger would misstate the privacy spent)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.accounting import Accountant, EpsilonConversion
from common.errors import LedgerError


@dataclass(frozen=True)
class RoundPlan:
    """A reserved round: what `plan_round` checked and wrote; hand it to `record_round`."""

    reservation_index: int
    reservation_sha256: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    accountant: Accountant
    conversion: EpsilonConversion | None
    dp_enabled: bool
    epsilon_round: float
    epsilon_total_before: float
    epsilon_total_after: float
    budget_epsilon: float
    budget_delta: float
    noise_source: str
    distributed: dict[str, Any] | None = None  # the entry's `distributed` object (both ε figures)


def check_trained_within(plan: RoundPlan, history: list[tuple[float, float, int]], index: int) -> None:
    steps = sum(int(n) for _, _, n in history)
    for noise_multiplier, sample_rate, _ in history:
        if not (
            math.isclose(noise_multiplier, plan.noise_multiplier, rel_tol=1e-12)
            and math.isclose(sample_rate, plan.sample_rate, rel_tol=1e-12)
        ):
            raise LedgerError(
                f"trained with noise_multiplier={noise_multiplier}, sample_rate={sample_rate} but reserved "
                f"{plan.noise_multiplier}, {plan.sample_rate} (entry {index}): the ledger would misstate the "
                "privacy spent; do not send this update."
            )
    if steps > plan.steps:
        raise LedgerError(
            f"trained {steps} steps but reserved {plan.steps} (entry {index}): the ledger would understate "
            "the privacy spent; do not send this update."
        )
