"""The budget check before anything is spent: the ε of the site's history before and after one more
event (and whatever else the caller will spend in the same round), and `BudgetExhausted`, naming the
figures, when the composition would pass the site's budget. Pure arithmetic: nothing is written."""

from __future__ import annotations

from common.accounting import Accountant, DPEvent, EpsilonConversion, SkellamEvent, compute_epsilon
from common.errors import BudgetExhausted
from common.ledger.entry import format_epsilon, method_name


def afford(
    history: list[DPEvent | SkellamEvent],
    event: DPEvent | SkellamEvent,
    also: list[DPEvent | SkellamEvent],
    *,
    delta: float,
    accountant: Accountant,
    conversion: EpsilonConversion | None,
    budget_epsilon: float,
    what: str,
    nothing: str,
) -> tuple[float, float, float]:
    """(ε before, ε after `event`, ε of `event` alone), or `BudgetExhausted` when `history` composed
    with `event` and then `also` would pass `budget_epsilon`."""

    def epsilon_of(events: list[DPEvent | SkellamEvent]) -> float:
        return compute_epsilon(events, delta=delta, accountant=accountant, conversion=conversion)

    before = epsilon_of(history)
    after = epsilon_of([*history, event])
    with_also = epsilon_of([*history, event, *also]) if also else after
    epsilon_event = epsilon_of([event])
    if with_also > budget_epsilon:
        spent, cost = format_epsilon(before), format_epsilon(epsilon_event)
        raise BudgetExhausted(
            f"privacy budget would be exceeded: spent epsilon={spent} (delta={delta}, "
            f"{method_name(accountant, conversion)}) so far; {what} (epsilon={cost}) would bring it to "
            f"{format_epsilon(with_also)} > budget {format_epsilon(budget_epsilon)}. Nothing {nothing} or sent."
        )
    return before, after, epsilon_event
