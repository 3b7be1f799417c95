"""`[privacy]` section of a site's TOML: DP-SGD settings and the site's own budget ceiling.

```toml
[privacy]
max_grad_norm = 1.0
target_epsilon = 2.0        # per run; σ is derived (see `resolve_noise_multiplier`)
target_delta = 1e-5
planned_rounds = 10
budget_epsilon = 8.0        # the site's total across all runs; no coordinator can raise it
budget_delta = 1e-5
eval_noise_multiplier = 20.0 # evaluation answers about hold-out records are DP releases, charged too
eval_loss_clip = 10.0       # each record's loss is clipped to [0, this] before it is summed
```

Evaluation answers. Hold-out records are never trained on, so DP-SGD covers none of them; every answer
about them (loss, accuracy) is a Gaussian-mechanism release with `eval_noise_multiplier`, recorded in
the ledger and composed into the site's total like a training round (client/privacy.py
`release_evaluation`). The per-run target accounts for them: σ is derived so that `planned_rounds`
rounds, each with one evaluation, plus one final evaluation, spend `target_epsilon` together.

DP is on unless the site writes `enabled = false`; that also requires `budget_epsilon = inf`, an explicit
acknowledgement that such a site has no finite guarantee (the ledger records those rounds with ε = inf).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.accounting import (
    Accountant,
    BudgetFigure,
    DPEvent,
    EpsilonConversion,
    NoiseModel,
    default_conversion,
    find_distributed_noise_multiplier,
    find_noise_multiplier,
)
from common.config.validate import check_table, enum_value, is_int, is_number, positive, probability
from common.errors import ConfigError


class GradSampleMode(StrEnum):
    """How Opacus computes per-sample gradients.

    `hooks` is the default: the fastest correct mode on a PEFT LoRA Llama. bench/dp_overhead.py on a
    2-core CPU (tiny Llama, batch 16, seq 32 / 128; three runs): DP/plain step time hooks 1.06-1.16x,
    functorch 1.16-1.36x, ghost 1.65-1.85x (ghost's second backward pass costs more than the
    per-sample gradients it saves when only the small LoRA matrices are trained).
    """

    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    GHOST = "ghost"


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings of one site. Give `noise_multiplier` directly, or the per-run target
    (`target_epsilon`, `target_delta`, `planned_rounds`) from which it is derived."""

    max_grad_norm: float
    budget_epsilon: float
    budget_delta: float
    enabled: bool = True
    accountant: Accountant = Accountant.RDP
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    target_delta: float | None = None
    planned_rounds: int | None = None
    grad_sample_mode: GradSampleMode = GradSampleMode.HOOKS
    poisson_sampling: bool = True
    # Noise multiplier of each evaluation answer (std of the noise on a sum / its sensitivity). 20 costs
    # 0.18 ε alone at δ = 1e-5 (11 answers 0.51 under RDP, less once composed with training); the answer's
    # error bar on the mean loss is 20 × Δ × eval_loss_clip / (hold-out records): 0.1 nats with 2,000
    # hold-out records. Sent with each answer as `eval_loss_noise_std`. Small hold-outs need a lower σ.
    eval_noise_multiplier: float = 20.0
    # Per-record loss clip of evaluation answers (nats): above the losses a useful model has, so clipping
    # rarely bites; the noise on the mean loss grows with it.
    eval_loss_clip: float = 10.0
    # "local": all of the DP noise is added here (DP-SGD). "distributed" (opt-in, needs [secagg] on the
    # coordinator): each round is one DP-FedSGD step and this site adds only its share of the noise; the
    # coordinator sees the sum over sites, which carries the full amount if `distributed_min_honest` (t)
    # sites, this one included, add theirs. common/distributed_dp.py, README "Two trust models".
    noise: NoiseModel = NoiseModel.LOCAL
    distributed_min_honest: int = 2
    # Which distributed ε the budget is enforced on: "sum" (against a coordinator that sees only the sum,
    # assuming >= t honest sites) or "own-noise" (this site's share alone). Both are recorded either way.
    distributed_budget: BudgetFigure = BudgetFigure.SUM

    def __post_init__(self) -> None:
        for name in ("enabled", "poisson_sampling"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be true or false, got {getattr(self, name)!r}.")
        object.__setattr__(self, "accountant", enum_value(Accountant, self.accountant, "accountant"))
        object.__setattr__(
            self, "grad_sample_mode", enum_value(GradSampleMode, self.grad_sample_mode, "grad_sample_mode")
        )
        object.__setattr__(self, "noise", enum_value(NoiseModel, self.noise, "noise"))
        object.__setattr__(
            self, "distributed_budget", enum_value(BudgetFigure, self.distributed_budget, "distributed_budget")
        )
        t = self.distributed_min_honest
        if not is_int(t) or t < 1:
            raise ConfigError(f"`distributed_min_honest` must be an integer >= 1, got {t!r}.")
        if self.noise is NoiseModel.DISTRIBUTED and (not self.enabled or self.accountant is not Accountant.RDP):
            raise ConfigError(
                '`noise = "distributed"` needs DP on and `accountant = "rdp"` (the Skellam analysis is an RDP '
                f"bound), got enabled={self.enabled}, accountant={str(self.accountant)!r}."
            )
        positive("max_grad_norm", self.max_grad_norm)
        positive("eval_noise_multiplier", self.eval_noise_multiplier)
        positive("eval_loss_clip", self.eval_loss_clip)
        budget = self.budget_epsilon
        if not (is_number(budget) and 0 < budget <= math.inf):
            raise ConfigError(f"`budget_epsilon` must be > 0 (inf allowed), got {budget!r}.")
        probability("budget_delta", self.budget_delta)

        if not self.enabled:
            if self.budget_epsilon != math.inf:
                raise ConfigError(
                    "`enabled = false` trains without differential privacy: set `budget_epsilon = inf` to "
                    f"acknowledge that this site's data gets no finite guarantee, got {self.budget_epsilon}."
                )
            warnings.warn(
                "[privacy] enabled = false: this site trains WITHOUT differential privacy; its ledger "
                "records epsilon = inf for every round.",
                stacklevel=2,
            )
            return

        if not self.poisson_sampling:
            warnings.warn(
                "[privacy] poisson_sampling = false: the rdp/prv accountants assume Poisson sampling, so the "
                "epsilon recorded for this site is an approximation, not a guarantee.",
                stacklevel=2,
            )
        direct = self.noise_multiplier is not None
        target = {
            "target_epsilon": self.target_epsilon,
            "target_delta": self.target_delta,
            "planned_rounds": self.planned_rounds,
        }
        given = [name for name, value in target.items() if value is not None]
        if direct and given:
            raise ConfigError(
                f"give either `noise_multiplier` or the target ({', '.join(target)}), not both; "
                f"got noise_multiplier={self.noise_multiplier} and {given[0]}={target[given[0]]}."
            )
        if direct:
            positive("noise_multiplier", self.noise_multiplier)
            return
        missing = [name for name, value in target.items() if value is None]
        if missing:
            raise ConfigError(
                f"`noise_multiplier` is not set, so {', '.join(f'`{m}`' for m in missing)} must be; "
                "give `noise_multiplier` directly or all of target_epsilon, target_delta, planned_rounds."
            )
        positive("target_epsilon", self.target_epsilon)
        probability("target_delta", self.target_delta)
        rounds = self.planned_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ConfigError(f"`planned_rounds` must be an integer >= 1, got {rounds!r}.")
        target_epsilon, target_delta = self.target_epsilon, self.target_delta
        if target_epsilon is not None and target_epsilon > self.budget_epsilon:
            raise ConfigError(
                f"`target_epsilon` must be <= `budget_epsilon` ({self.budget_epsilon}), got {self.target_epsilon}."
            )
        if target_delta is not None and target_delta > self.budget_delta:
            raise ConfigError(
                f"`target_delta` must be <= `budget_delta` ({self.budget_delta}), got {self.target_delta}."
            )

    @property
    def conversion(self) -> EpsilonConversion | None:
        """The ε conversion recorded with every ε (Opacus 1.6's: Balle et al. 2020 for RDP)."""
        return default_conversion(self.accountant)

    @property
    def delta(self) -> float:
        """δ at which ε is reported and checked against the budget: `target_delta`, else `budget_delta`."""
        return self.target_delta if self.target_delta is not None else self.budget_delta

    @property
    def eval_event(self) -> DPEvent:
        """The Gaussian mechanism of one evaluation answer (noise 0, ε = inf, without DP)."""
        return DPEvent(self.eval_noise_multiplier if self.enabled else 0.0, 1.0, 1)

    def resolve_noise_multiplier(self, *, sample_rate: float, steps_per_round: int) -> float:
        """σ for this site's rounds; 0.0 when DP is disabled.

        Derived: the smallest σ (within 0.01 ε) such that `planned_rounds × steps_per_round` steps at
        `sample_rate`, composed with `planned_rounds + 1` evaluation answers (one per round and the
        final one), spend at most `target_epsilon` at `target_delta` with this accountant and
        conversion; the search never overshoots. Spending already in the ledger is not subtracted:
        the ledger's budget check refuses a round that would cross `budget_epsilon`.
        """
        if not self.enabled:
            return 0.0
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        target_epsilon, planned_rounds, answers = self._target()
        return find_noise_multiplier(
            target_epsilon=target_epsilon,
            delta=self.delta,
            sample_rate=sample_rate,
            steps=planned_rounds * steps_per_round,
            accountant=self.accountant,
            conversion=self.conversion,
            extra_events=answers,
        )

    def resolve_distributed_noise_multiplier(
        self, *, sample_rate: float, l2_sensitivity: float, l1_sensitivity: float
    ) -> float:
        """σ of a distributed round's counted noise, in units of its L2 sensitivity (integers): given, or
        the smallest such that `planned_rounds` rounds (one step each) and `planned_rounds + 1`
        evaluation answers spend `target_epsilon` on the figure `distributed_budget` names."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        target_epsilon, planned_rounds, answers = self._target()
        return find_distributed_noise_multiplier(
            target_epsilon=target_epsilon,
            delta=self.delta,
            sample_rate=sample_rate,
            rounds=planned_rounds,
            l2_sensitivity=l2_sensitivity,
            l1_sensitivity=l1_sensitivity,
            extra_events=answers,
        )

    def _target(self) -> tuple[float, int, list[DPEvent]]:
        """What σ is derived from when `noise_multiplier` is not given: `target_epsilon`, `planned_rounds`
        and their evaluation answers (one per round and the final one)."""
        target_epsilon, planned_rounds = self.target_epsilon, self.planned_rounds
        if target_epsilon is None or planned_rounds is None:  # unreachable: __post_init__ requires both
            raise ConfigError("`noise_multiplier` or `target_epsilon` and `planned_rounds` must be set.")
        return target_epsilon, planned_rounds, [self.eval_event] * (planned_rounds + 1)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PrivacyConfig:
        """Build from the parsed `[privacy]` table; unknown keys are an error, not ignored."""
        data = check_table(cls, "privacy", data)
        for name in ("max_grad_norm", "budget_epsilon", "budget_delta"):
            if name not in data:
                raise ConfigError(f"[privacy] is missing required key `{name}`.")
        return cls(**dict(data))
