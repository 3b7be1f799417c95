"""The site operator's one line per round: what this round took from the site and what it sent.

    round 2 of run 1a2b3c4d (Flower run 88121, app 3f9a0c1d2e4b): 96 records scrubbed, 1 quarantined;
    ε +1.02 this round (training and its evaluation answer), total 5.77 of 10.00, 4.23 left;
    sent update sha256 ab12cd34ef56...

`silo site start` shows it (it is a `[silo]` line; Flower's own lines stay in the node's log). The ε
figures come from the ledger the round was just recorded in: "this round" is what the round added to
the composed total (the evaluation answer charged on receipt and the training), so the column of
these lines adds up to the total, unlike each round's ε on its own. Counts only, never a record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Message

from client.round_plan import RoundId
from common.errors import SiloError
from common.ledger.verify import read_ledger
from common.run_request import RECORD, read_run_request

# Hex digits of a hash shown on the line (the ledger and the manifest keep them whole).
SHORT = 12


def round_increment(entries: list[dict[str, Any]], run_id: str, round: int) -> float:
    """ε the entries of (`run_id`, `round`) added to the ledger's total: the total after the last of
    them minus the total before the first."""
    mine = [i for i, e in enumerate(entries) if e.get("run_id") == run_id and e.get("round") == round]
    if not mine:
        return math.nan
    before = float(entries[mine[0] - 1]["epsilon_total"]) if mine[0] > 0 else 0.0
    after = float(entries[mine[-1]]["epsilon_total"])
    return 0.0 if math.isinf(before) else after - before


def _app(msg: Message) -> str:
    try:
        return read_run_request(msg.content.config_records.get(RECORD))[0].app_sha256[:SHORT]
    except SiloError:
        return "unsigned"


def _eps(value: Any) -> str:
    number = float(value)
    return "inf" if math.isinf(number) else f"{number:.2f}"


def round_line(
    rid: RoundId,
    entry: Mapping[str, Any],
    scrub: Mapping[str, Any],
    update_sha256: str,
    ledger: Path,
    msg: Message,
    *,
    answer_after: bool = False,
) -> str:
    """The line for round `rid` just recorded as `entry` in `ledger`, for the update hashed `update_sha256`
    (`answer_after`: the round's evaluation answer is charged after the reply, with a line of its own)."""
    run_id, round = rid.run_id, rid.round
    total, budget = float(entry["epsilon_total"]), float(entry["budget_epsilon"])
    added = round_increment(read_ledger(ledger), run_id, round)
    left = "unlimited" if math.isinf(budget) else f"{_eps(budget - total)} left"
    spent = "training; its evaluation answer after the reply" if answer_after else "training and its evaluation answer"
    return (
        f"round {round} of run {run_id} (Flower run {msg.metadata.run_id}, app {_app(msg)}): "
        f"{scrub.get('records_in', '?')} records scrubbed, {scrub.get('quarantined', '?')} quarantined; "
        f"ε +{_eps(added)} this round ({spent}), total {_eps(total)} of "
        f"{_eps(budget)}, {left}; sent update sha256 {update_sha256[:SHORT]}"
    )


def evaluation_line(rid: RoundId, entries: list[dict[str, Any]], msg: Message) -> str:
    """The line for an evaluation answer just charged as the last of the ledger's `entries` (the final
    evaluation after the last round spends ε too: without this line the site's screen would stop short of
    its total)."""
    entry = entries[-1]
    total, budget = float(entry["epsilon_total"]), float(entry["budget_epsilon"])
    before = float(entries[-2]["epsilon_total"]) if len(entries) > 1 else 0.0
    added = 0.0 if math.isinf(before) else total - before
    left = "unlimited" if math.isinf(budget) else f"{_eps(budget - total)} left"
    return (
        f"evaluation answer for round {rid.round} of run {rid.run_id} (Flower run {msg.metadata.run_id}, "
        f"app {_app(msg)}): ε +{_eps(added)}, total {_eps(total)} of {_eps(budget)}, {left}"
    )
