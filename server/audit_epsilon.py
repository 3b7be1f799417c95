"""Every ε an auditor is shown, recomputed from DP events with an INDEPENDENT accountant.

The sites compute ε with Opacus; the auditor recomputes it with Google's `dp-accounting` from the
events `(noise_multiplier, sample_rate, steps)` alone, never trusting a recorded figure:

- `ledger_epsilon_problem`: each ledger entry's `epsilon_round` (its event alone) and `epsilon_total`
  (the composition of every reservation up to it, across runs), and no total above the budget;
- `declared_epsilon_problem`: what a site declared in the manifest for one round;
- `declared_total_problem`: a site's declared total must be at least the composition of the events
  it declared in this run (earlier runs only add to it). This needs no ledger, so a total forged
  downward in the manifest is caught even when the site's ledger is not given.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

from common.accounting import (
    Accountant,
    BudgetFigure,
    EpsilonConversion,
    SkellamEvent,
    compute_epsilon,
    compute_epsilon_distributed,
    compute_epsilon_dp_accounting,
    split_history,
)
from common.declaration import PrivacyDeclaration
from common.errors import ConfigError
from common.ledger.entry import (
    SPENDING_KINDS,  # entries whose event counts as spent
    BadEntry,
    check_distributed,
    event_of,
)
from common.schema import decode_epsilon

INDEPENDENT_REL_TOL = 1e-2
"""Recorded ε (Opacus) vs dp-accounting's, relative. Both implement the same RDP bound of the Poisson
subsampled Gaussian over the same orders; measured here they agree to < 1e-3 relative for ε < 10
(e.g. σ=0.7, q=1/16, 36 steps: 7.6817 vs 7.6890) and to 1e-6 in the usual regime. They drift apart
for large ε or q (small σ): dp-accounting drops fractional orders whose series does not converge, so
its bound is LOOSER (σ=0.5, q=0.25, 1000 steps: 396 vs 898). 1e-2 accepts the first and catches any
edit that matters; the second is handled by `_independent_agrees`."""

SAME_NUMBER_REL_TOL = 1e-9
"""The manifest and the ledger carry the same float through JSON: only float noise is allowed."""

Event = tuple[float, float, int] | SkellamEvent
"""(noise_multiplier, sample_rate, steps), or a distributed round's Skellam event."""


# dp-accounting's RDP for fractional orders logs one warning per order and step size that does not
# converge (hundreds of lines); the outcome is already handled by the tolerance rule below.
_QUIET_LOGGERS = ("absl", "root", "dp_accounting")


def ledger_epsilon_problem(entries: list[dict[str, Any]]) -> tuple[str | None, float]:
    """(why the first bad entry's ε does not recompute, _) or (None, largest relative difference).

    `reserve` and `evaluation` entries spend their event; a `round` entry repeats its reservation's;
    a `restart` entry (entry 0 of a ledger started again deliberately) spends nothing."""
    events: list[Event] = []
    spent: list[dict[str, Any]] = []
    reserved: dict[int, dict[str, Any]] = {}
    worst = 0.0
    for entry in entries:
        if entry["kind"] == "restart":
            continue
        source = entry
        if entry["kind"] in SPENDING_KINDS:
            events.append(_entry_event(entry))
            spent.append(entry)
            reserved[entry["index"]] = entry
        else:
            source = reserved.get(entry["reservation"], entry)
        for field_name, history in (("epsilon_round", (_entry_event(source),)), ("epsilon_total", tuple(events))):
            problem, rel = _independent_agrees(float(entry[field_name]), history, entry)
            if problem:
                return f"entry {entry['index']}: {field_name} {problem}", rel
            worst = max(worst, rel)
        if entry.get("distributed"):
            problem = distributed_figures_problem(entry, source, spent)
            if problem:
                return f"entry {entry['index']}: {problem}", worst
        budget = float(entry["budget_epsilon"])
        if float(entry["epsilon_total"]) > budget * (1 + INDEPENDENT_REL_TOL):
            return f"entry {entry['index']}: epsilon_total {entry['epsilon_total']} exceeds the budget {budget}", worst
    return None, worst


def distributed_figures_problem(
    entry: dict[str, Any], source: dict[str, Any], spent: list[dict[str, Any]]
) -> str | None:
    """A distributed round's two figures (the SecAgg sum counting t honest shares; the site's own share
    alone), each recomputed from the entries with dp-accounting's Gaussian RDP beside the Skellam bound
    (Agarwal et al. 2021 under Zhu and Wang 2019's subsampling, common/accounting.py)."""
    delta = float(entry["delta"])
    for figure, suffix in ((BudgetFigure.SUM, "sum"), (BudgetFigure.OWN_NOISE, "own")):
        for name, history in (
            (f"epsilon_round_{suffix}", [event_of(source, figure)]),
            (f"epsilon_total_{suffix}", [event_of(e, figure) for e in spent]),
        ):
            recorded = decode_epsilon(entry["distributed"][name])
            independent = _independent_distributed(tuple(history), delta)
            if not math.isclose(recorded, independent, rel_tol=INDEPENDENT_REL_TOL):
                return f"distributed {name} recorded {recorded:.6g} but recomputes to {independent:.6g}"
    return None


def declared_epsilon_problem(privacy: PrivacyDeclaration) -> str | None:
    """A site's declared epsilon_round, recomputed from its declared event (dp-accounting); for a
    distributed round also both figures' epsilon_round."""
    try:
        check_distributed(-1, {"distributed": privacy.distributed, "steps": privacy.steps})
    except BadEntry as err:
        return f"distributed {err.reason}"
    problem, _ = _independent_agrees(privacy.epsilon_round, (_event(privacy),), _method(privacy))
    if problem:
        return f"epsilon_round {problem}"
    if privacy.distributed:
        entry = _declared_entry(privacy)
        for figure, suffix in ((BudgetFigure.SUM, "sum"), (BudgetFigure.OWN_NOISE, "own")):
            recorded = decode_epsilon(privacy.distributed[f"epsilon_round_{suffix}"])
            independent = _independent_distributed((event_of(entry, figure),), float(privacy.delta))
            if not math.isclose(recorded, independent, rel_tol=INDEPENDENT_REL_TOL):
                return f"distributed epsilon_round_{suffix} recorded {recorded:.6g} but recomputes to {independent:.6g}"
    return None


def declared_total_problem(declared: list[PrivacyDeclaration]) -> str | None:
    """`declared`: one site's privacy declarations of this run, in round order. Each `epsilon_total`
    must not fall below the composition of this run's events so far, recomputed with the site's own
    accountant (a lower bound: the site's earlier runs only add to it), nor below the round before."""
    events: list[Event] = []
    previous = 0.0
    for privacy in declared:
        events.append(_event(privacy))
        floor = _opacus_epsilon(tuple(events), privacy.delta, privacy.accountant, privacy.conversion)
        recorded = privacy.epsilon_total
        if recorded < floor * (1 - SAME_NUMBER_REL_TOL) or recorded < previous:
            composed = max(floor, previous)
            return f"epsilon_total {recorded:.6g} is below {composed:.6g}, what this run's events so far compose to"
        previous = recorded
    return None


def _event(privacy: PrivacyDeclaration) -> Event:
    if privacy.distributed:
        return event_of(_declared_entry(privacy))
    return (float(privacy.noise_multiplier), float(privacy.sample_rate), int(privacy.steps))


def _declared_entry(privacy: PrivacyDeclaration) -> dict[str, Any]:
    """The declared round as the ledger entry fields `event_of` reads."""
    return {"distributed": privacy.distributed, "sample_rate": privacy.sample_rate, "steps": privacy.steps}


def _method(privacy: PrivacyDeclaration) -> dict[str, Any]:
    return {"delta": privacy.delta, "accountant": privacy.accountant, "epsilon_conversion": privacy.conversion}


def _independent_agrees(recorded: float, history: tuple[Event, ...], entry: dict[str, Any]) -> tuple[str | None, float]:
    """(None, relative difference) when dp-accounting confirms `recorded`; (why not, _) otherwise.

    RDP: dp-accounting must agree to INDEPENDENT_REL_TOL, or be the looser of the two (its dropped
    fractional orders) while Opacus reproduces the recorded value exactly. PRV: dp-accounting has no
    PRV accountant; a PRV ε is tighter than the RDP bound of the same events, so it must not exceed
    dp-accounting's RDP ε (Balle conversion)."""
    delta = float(entry["delta"])
    accountant = entry["accountant"]
    conversion = EpsilonConversion(entry["epsilon_conversion"] or EpsilonConversion.BALLE2020)
    independent = _dp_accounting_epsilon(history, delta, conversion)
    if math.isinf(independent) or math.isinf(recorded):
        same = math.isinf(independent) and math.isinf(recorded)
        return (None if same else f"recorded {recorded} but dp-accounting recomputes {independent}"), 0.0
    rel = abs(recorded - independent) / max(abs(independent), 1e-12)
    if accountant == "prv":
        if recorded <= independent * (1 + INDEPENDENT_REL_TOL):
            return None, 0.0
        return f"recorded {recorded:.6g} (prv) exceeds no bound: above dp-accounting's RDP bound {independent:.6g}", rel
    if rel <= INDEPENDENT_REL_TOL:
        return None, rel
    opacus = _opacus_epsilon(history, delta, accountant, entry["epsilon_conversion"])
    if recorded < independent and math.isclose(recorded, opacus, rel_tol=SAME_NUMBER_REL_TOL):
        return None, 0.0  # dp-accounting is the looser bound here; Opacus' (recorded) one reproduces
    return f"recorded {recorded:.6g} but dp-accounting recomputes {independent:.6g} (Opacus {opacus:.6g})", rel


def _entry_event(entry: dict[str, Any]) -> Event:
    """What a ledger entry spends under the figure its budget names (a Skellam event for a distributed round)."""
    if entry.get("distributed"):
        return event_of(entry)
    return (float(entry["noise_multiplier"]), float(entry["sample_rate"]), int(entry["steps"]))


def _no_noise(history: tuple[Event, ...]) -> bool:
    """A Gaussian event without noise (a round without DP) in `history`: ε = inf."""
    gaussian, _ = split_history(history)
    return any(sigma == 0 and q > 0 and n > 0 for sigma, q, n in gaussian)


@functools.lru_cache(maxsize=1024)
def _independent_distributed(history: tuple[Event, ...], delta: float) -> float:
    if _no_noise(history):
        return math.inf
    gaussian, skellam = split_history(history)
    with _quiet():
        return compute_epsilon_distributed(gaussian, skellam, delta=delta, gaussian_rdp="dp_accounting")


@functools.lru_cache(maxsize=1024)
def _dp_accounting_epsilon(history: tuple[Event, ...], delta: float, conversion: EpsilonConversion) -> float:
    """Cached: a ledger repeats the same composition prefix, and dp-accounting takes up to ~1 s a call."""
    if _no_noise(history):
        return math.inf  # a round without DP
    with _quiet():
        try:
            return compute_epsilon_dp_accounting(list(history), delta=delta, conversion=conversion)
        except ConfigError:
            return math.nan


@functools.lru_cache(maxsize=1024)
def _opacus_epsilon(history: tuple[Event, ...], delta: float, accountant: str, conversion: str | None) -> float:
    if _no_noise(history):
        return math.inf
    with _quiet():
        try:
            return compute_epsilon(
                list(history),
                delta=delta,
                accountant=Accountant(accountant),
                conversion=None if conversion is None else EpsilonConversion(conversion),
            )
        except ConfigError:
            return math.nan


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    levels = [(logging.getLogger(n), logging.getLogger(n).level) for n in _QUIET_LOGGERS]
    for logger, _ in levels:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in levels:
            logger.setLevel(level)
