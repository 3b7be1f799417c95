"""`silo budget`: a site's privacy spent and remaining, per run and per round, from its ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from common import keys
from common.accounting import Accountant, EpsilonConversion, SkellamEvent, compute_epsilon
from common.errors import LedgerError
from common.ledger.entry import event_of
from common.ledger.verify import iter_rounds, read_ledger, verify_ledger
from common.schema import strict_json
from silo import console

_EXPLAINED = (
    "Epsilon is cumulative over EVERY spend in the ledger (all runs, restarts included): each total is the privacy "
    'accountant\'s composition of all recorded DP events. "added" is what that spend added to the total; the '
    "column adds up to the total (a round's ε on its own would not: composition is sub-additive). A round that was "
    'reserved but never completed (the site stopped mid-round) still counts as spent. "left" is the site\'s '
    'budget_epsilon minus the total. "rounds that fit" composes the whole history with more rounds like the last '
    "one (its training and its evaluation answers) until the budget would be passed. The ledger is verified first "
    "(against --public-key, or else the key it names) and an invalid ledger is refused."
)
EXAMPLES = (
    "silo budget --ledger site/ledger.jsonl",
    "silo budget --ledger site/ledger.jsonl --public-key site/keys/ledger.pem.pub --json",
)

_COLUMNS = (
    ("entry", "{index}"),
    ("run", "{run_id}"),
    ("round", "{round}"),
    ("status", "{status}"),
    ("sigma", "{noise_multiplier:.4g}"),
    ("q", "{sample_rate:.4g}"),
    ("steps", "{steps}"),
    ("eps added", "{epsilon_added}"),
    ("eps total", "{epsilon_total}"),
    ("budget", "{budget_epsilon}"),
    ("left", "{remaining}"),
)
# The ledger entry's fields a budget row carries as they are (status, distributed, remaining are added).
_ROW_FIELDS = (
    "index",
    "run_id",
    "round",
    "site_id",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "epsilon_round",
    "epsilon_total",
    "budget_epsilon",
    "delta",
    "accountant",
    "epsilon_conversion",
    "dp_enabled",
    "timestamp",
)
# Most further rounds `rounds_that_fit` looks for; past it a budget is as good as unlimited.
MAX_ROUNDS_AHEAD = 10_000


def register(app: typer.Typer) -> None:
    help_text = (
        "Show a site's privacy budget: spent and remaining per run and round.\n\n"
        "Read a site's privacy ledger and show epsilon spent and remaining per run and round.\n\n" + _EXPLAINED
    )
    app.command("budget", help=console.help_text(help_text), epilog=console.examples(*EXAMPLES))(run)


def run(
    ledger: Annotated[str, typer.Option("--ledger", metavar="FILE", help="the site's ledger (JSONL)")],
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key", metavar="FILE", help="the site's Ed25519 public key (PEM) to verify signatures against"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> int:
    key = keys.load_public_key(public_key) if public_key else None
    result = verify_ledger(ledger, key)
    if not result.ok:
        raise LedgerError(f"{ledger}: {result} Not showing a budget from it (see `silo ledger verify`).")
    report = budget_report(Path(ledger))
    report["verified_against"] = "--public-key" if key else "the key named in the ledger"
    if as_json:
        print(json.dumps(strict_json(report), indent=2, allow_nan=False))
    else:
        print_report(report)
    return 0


def budget_report(path: Path) -> dict[str, Any]:
    """Rounds, runs and the current total of a (verified) ledger, as plain data."""
    entries = read_ledger(path)
    rounds: list[dict[str, Any]] = []
    for entry, status in iter_rounds(entries):
        row = {name: entry[name] for name in _ROW_FIELDS}
        row["status"] = status
        row["distributed"] = entry.get("distributed")  # a distributed round: its Skellam event (event_of)
        row["remaining"] = _remaining(entry)
        previous = rounds[-1]["epsilon_total"] if rounds else 0.0
        row["epsilon_added"] = entry["epsilon_total"] - previous if not math.isinf(previous) else 0.0
        rounds.append(row)
    last = entries[-1] if entries else None
    runs = _runs(entries, rounds, last)
    spent = {
        "epsilon": last["epsilon_total"] if last else 0.0,
        "delta": last["delta"] if last else None,
        "budget_epsilon": last["budget_epsilon"] if last else None,
        "remaining": _remaining(last) if last else None,
        "method": _method(last) if last else None,
        "rounds_that_fit": rounds_that_fit(rounds, last) if last else None,
    }
    return {"ledger": str(path), "entries": len(entries), "rounds": rounds, "runs": runs, "spent": spent}


def _runs(entries: list[dict[str, Any]], rounds: list[dict[str, Any]], last: dict[str, Any] | None) -> list[dict]:
    """Per run: its rounds, the ε of its own events alone, and the ledger total after its last round."""
    if last is None:
        return []
    accountant = Accountant(last["accountant"])
    conversion = EpsilonConversion(last["epsilon_conversion"]) if last["epsilon_conversion"] else None
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in rounds:
        runs.setdefault(row["run_id"] or "(unnamed)", []).append(row)
    out = []
    for run_id, rows in runs.items():
        events = [_event(r) for r in rows]
        out.append(
            {
                "run_id": run_id,
                "rounds": sum(r["status"] != "evaluation" for r in rows),  # evaluation answers are spends, not rounds
                "epsilon_run": compute_epsilon(
                    events, delta=last["delta"], accountant=accountant, conversion=conversion
                ),
                "epsilon_total_after": rows[-1]["epsilon_total"],
                "remaining_after": rows[-1]["remaining"],
            }
        )
    return out


def _event(row: dict[str, Any]) -> tuple[float, float, int] | SkellamEvent:
    """What the row spends, as the ledger counts it (a distributed round under its budget's figure)."""
    return event_of(row) if row.get("distributed") else (row["noise_multiplier"], row["sample_rate"], row["steps"])


def rounds_that_fit(rows: list[dict[str, Any]], last: dict[str, Any]) -> int | None:
    """How many more rounds like the last recorded one (its training event and the evaluation answers
    since the round before) the budget still admits, composing the whole history each time; None
    when the budget is unlimited (no DP ceiling) or no round was recorded yet."""
    recorded = [i for i, r in enumerate(rows) if r["status"] == "recorded"]
    if not recorded or math.isinf(last["budget_epsilon"]):
        return None
    start = recorded[-2] + 1 if len(recorded) > 1 else 0
    plan = [_event(r) for r in rows[start : recorded[-1] + 1] if r["status"] != "reserved, never completed"]
    history = [_event(r) for r in rows]
    accountant = Accountant(last["accountant"])
    conversion = EpsilonConversion(last["epsilon_conversion"]) if last["epsilon_conversion"] else None

    def fits(k: int) -> bool:
        eps = compute_epsilon(history + plan * k, delta=last["delta"], accountant=accountant, conversion=conversion)
        return eps <= last["budget_epsilon"]

    if not fits(1):
        return 0
    low, high = 1, 2  # ε grows with every round: find a k that does not fit, then bisect
    while fits(high):
        low, high = high, high * 2
        if high > MAX_ROUNDS_AHEAD:
            return MAX_ROUNDS_AHEAD
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def print_report(report: dict[str, Any]) -> None:
    """The report for a person: a table of every spend, each run's share, and what is left."""
    spent = report["spent"]
    if not report["rounds"]:
        console.say(f"{report['ledger']}: no rounds recorded; nothing spent.")
        return
    rows = []
    for r in report["rounds"]:
        values = {
            k: (_num(v) if k in ("epsilon_added", "epsilon_total", "budget_epsilon", "remaining") else v)
            for k, v in r.items()
        }
        values = {k: ("-" if v is None else v) for k, v in values.items()}
        rows.append([fmt.format(**values) for _, fmt in _COLUMNS])
    console.print_table(None, [title for title, _ in _COLUMNS], rows)
    lines = ["", "per run (epsilon of the run alone; total = whole ledger after its last round):"]
    for run in report["runs"]:
        lines.append(
            f"  {run['run_id']}: rounds {run['rounds']}, epsilon {_num(run['epsilon_run'])}, "
            f"total after {_num(run['epsilon_total_after'])}, left {_num(run['remaining_after'])}"
        )
    lines.append("")
    fit = spent["rounds_that_fit"]
    more = "unlimited (no budget ceiling)" if fit is None else f"{fit}{'+' if fit >= MAX_ROUNDS_AHEAD else ''}"
    lines.append(
        f"spent epsilon {_num(spent['epsilon'])} of budget {_num(spent['budget_epsilon'])} at delta "
        f"{spent['delta']} ({spent['method']}); left {_num(spent['remaining'])}; rounds like the last that "
        f"still fit: {more}. Signatures verified against {report.get('verified_against', '?')}."
    )
    for line in lines:
        console.say(line)


def _method(entry: dict[str, Any]) -> str:
    return entry["accountant"] + (f"/{entry['epsilon_conversion']}" if entry["epsilon_conversion"] else "")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def _remaining(entry: dict[str, Any]) -> float:
    """Budget left after an entry; an infinite budget (a site without DP) never runs out."""
    budget = entry["budget_epsilon"]
    return math.inf if math.isinf(budget) else budget - entry["epsilon_total"]
