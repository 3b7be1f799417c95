"""One ledger entry: its fields and their types per format, its canonical bytes, and ε as JSON."""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Any

from common.accounting import Accountant, BudgetFigure, DPEvent, EpsilonConversion, SkellamEvent
from common.errors import LedgerError
from common.schema import decode_epsilon, number_or_inf

LEDGER_FORMAT = 4
"""Version of the entry layout written now; bump when fields change meaning. 2 added `noise_source` and
the `evaluation` and `restart` kinds; format-1 entries still verify (their ε claims are void). 3 added
`phase`: what a training round trained ("probe": the head alone; "lora"), null on other kinds. 4 added
`distributed`: null for a round with all of its noise added at the site, else the distributed round's
mechanism and both its ε figures (`DISTRIBUTED_FIELDS`)."""

READABLE_FORMATS = (1, 2, 3, 4)

GENESIS_SHA256 = "0" * 64
"""`prev_sha256` of the first entry: there is no previous line."""

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class EntryKind(StrEnum):
    RESERVE = "reserve"
    ROUND = "round"
    EVALUATION = "evaluation"
    RESTART = "restart"


SPENDING_KINDS = (EntryKind.RESERVE, EntryKind.EVALUATION)
"""Entries whose event counts as spent."""


class Sampling(StrEnum):
    """Sampling assumption behind the recorded ε: the accountants are exact for Poisson only."""

    POISSON = "poisson"
    SHUFFLE = "shuffle"


FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "index": (int,),
    "kind": (str,),
    "reservation": (int, type(None)),
    "run_id": (str, type(None)),
    "round": (int, type(None)),
    "site_id": (str, type(None)),
    "dp_enabled": (bool,),
    "noise_multiplier": (float, int),
    "sample_rate": (float, int),
    "steps": (int,),
    "sampling": (str,),
    "max_grad_norm": (float, int, type(None)),
    "dataset_size": (int, type(None)),
    "accountant": (str,),
    "epsilon_conversion": (str, type(None)),
    "delta": (float,),
    "epsilon_round": (float, int, str),
    "epsilon_total": (float, int, str),
    "budget_epsilon": (float, int, str),
    "budget_delta": (float,),
    "update_sha256": (str, type(None)),
    "timestamp": (str,),
    "code_version": (str,),
    "site_public_key": (str,),
    "prev_sha256": (str,),
    "signature": (str,),
}
"""Every format-1 entry has exactly these keys; ε fields are numbers, or "inf"."""

FIELDS_BY_FORMAT: dict[int, dict[str, tuple[type, ...]]] = {
    1: FIELDS,
    2: {**FIELDS, "noise_source": (str,)},
    3: {**FIELDS, "noise_source": (str,), "phase": (str, type(None))},
    4: {**FIELDS, "noise_source": (str,), "phase": (str, type(None)), "distributed": (dict, type(None))},
}
"""Format 2 adds `noise_source`, format 3 `phase`, format 4 `distributed`."""

DISTRIBUTED_FIELDS: dict[str, tuple[type, ...]] = {
    "trust_model": (str,),  # "distributed": the coordinator sees only the SecAgg sum over sites
    "min_honest": (int,),  # t: the honest sites (this one included) whose noise shares the "sum" figure counts
    "budget_figure": (str,),  # the figure the budget was enforced on, and the entry's own epsilon_* fields
    "share_variance": (float, int),  # this site's Skellam noise variance per coordinate (integer units)
    "l2_sensitivity": (float, int),  # one record's rounded contribution, L2 (integer units)
    "l1_sensitivity": (float, int),
    "l2_clip": (float, int),  # one record's contribution before rounding, L2 (integer units)
    "dim": (int,),
    "grid_step": (float, int),  # the adapter value of one integer (the coordinator's SecAgg grid)
    "epsilon_round_sum": (float, int, str),
    "epsilon_total_sum": (float, int, str),
    "epsilon_round_own": (float, int, str),
    "epsilon_total_own": (float, int, str),
}
"""A format-4 `distributed` object has exactly these keys; `_sum` figures count `min_honest` noise shares,
`_own` figures this site's alone (Agarwal et al. 2021 Skellam RDP, common/accounting.py)."""

PHASES = ("probe", "lora")
"""client.train.Phase's values: a `reserve` and its `round` entry say which of them the round trained."""

NOISE_SOURCES = ("os-seeded", "caller-generator", "none")
"""client.privacy.NoiseSource's values; only "os-seeded" backs an ε claim."""

EPSILON_FIELDS = ("epsilon_round", "epsilon_total", "budget_epsilon")
"""Written as numbers, or the string "inf" (strict JSON has no infinity)."""

EVENT_FIELDS = (
    "dp_enabled",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "sampling",
    "accountant",
    "epsilon_conversion",
    "delta",
    "epsilon_round",
)
"""A `round` entry repeats these from its reservation unchanged."""


class BadEntry(Exception):
    """Entry `index` breaks the format or the chain; `reason` says how."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}")
        self.index, self.reason = index, reason


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes that are hashed and signed: sorted keys, no spaces, ASCII, strict JSON."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def parse_entry(index: int, line: bytes) -> dict[str, Any]:
    """Line `index` as an entry of a readable format, exactly its fields and types, in canonical form;
    `BadEntry` otherwise. Checks neither the chain nor the signature (`verify.walk` does)."""

    def reject_constant(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    try:
        entry = json.loads(line.decode("ascii"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadEntry(index, f"not valid JSON ({err}).") from None
    if not isinstance(entry, dict):
        raise BadEntry(index, "not a JSON object.")
    fmt = entry.get("format")
    if isinstance(fmt, bool) or fmt not in FIELDS_BY_FORMAT:
        raise BadEntry(index, f"unknown format {fmt!r} (this code reads {READABLE_FORMATS}).")
    fields = FIELDS_BY_FORMAT[fmt]
    if set(entry) != set(fields):
        extra, missing = sorted(set(entry) - set(fields)), sorted(set(fields) - set(entry))
        raise BadEntry(index, f"wrong fields (unexpected {extra}, missing {missing}).")
    for name, types in fields.items():
        value = entry[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadEntry(index, f"`{name}` has the wrong type ({type(value).__name__}).")
    for name in EPSILON_FIELDS:
        if isinstance(entry[name], str) and entry[name] != "inf":
            raise BadEntry(index, f'`{name}` must be a number or "inf", got {entry[name]!r}.')
    for name in ("prev_sha256", "site_public_key", "signature"):
        if not re.fullmatch(r"(?:[0-9a-f]{2})+", entry[name]):
            raise BadEntry(index, f"`{name}` must be lowercase hex.")
    if canonical(entry) != line:
        raise BadEntry(index, "not in canonical form (bytes were edited).")
    return entry


def encode_epsilon(value: float) -> float | str:
    """ε as written: a float, or "inf". A NaN ε is never recorded."""
    if math.isnan(value):
        raise LedgerError("refusing to record epsilon = NaN.")
    return number_or_inf(value)


def decoded(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with its ε fields as floats."""
    return {k: decode_epsilon(v) if k in EPSILON_FIELDS else v for k, v in entry.items()}


def check_noise_source(value: str | None, *, dp_enabled: bool) -> str:
    """`value`, or the default for `dp_enabled` ("os-seeded" / "none"); `LedgerError` when they disagree."""
    source = value if value is not None else ("os-seeded" if dp_enabled else "none")
    if source not in NOISE_SOURCES or (source == "none") == dp_enabled:
        raise LedgerError(f"noise source {source!r} does not fit a round with dp_enabled={dp_enabled}.")
    return source


def conversion_of(value: str | None) -> EpsilonConversion | None:
    return None if value is None else EpsilonConversion(value)


def event_of(entry: dict[str, Any], figure: str | None = None) -> DPEvent | SkellamEvent:
    """What `entry` spends: its Gaussian event, or for a distributed round its Skellam event under
    `figure` ("sum" or "own-noise"; by default the one its budget was enforced on)."""
    distributed = entry.get("distributed")
    if not distributed:
        return DPEvent(float(entry["noise_multiplier"]), float(entry["sample_rate"]), entry["steps"])
    figure = BudgetFigure(figure or distributed["budget_figure"])
    counted = int(distributed["min_honest"]) if figure is BudgetFigure.SUM else 1
    return SkellamEvent(
        counted * float(distributed["share_variance"]),
        float(distributed["l2_sensitivity"]),
        float(distributed["l1_sensitivity"]),
        float(entry["sample_rate"]),
        int(entry["steps"]),
    )


def check_distributed(index: int, entry: dict[str, Any]) -> None:
    """A format-4 entry's `distributed` object: null, or exactly `DISTRIBUTED_FIELDS` with sane values."""
    distributed = entry["distributed"]
    if distributed is None:
        return
    if set(distributed) != set(DISTRIBUTED_FIELDS):
        extra, missing = (
            sorted(set(distributed) - set(DISTRIBUTED_FIELDS)),
            sorted(set(DISTRIBUTED_FIELDS) - set(distributed)),
        )
        raise BadEntry(index, f"`distributed` has wrong fields (unexpected {extra}, missing {missing}).")
    for name, types in DISTRIBUTED_FIELDS.items():
        value = distributed[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise BadEntry(index, f"`distributed.{name}` has the wrong type ({type(value).__name__}).")
        if isinstance(value, str) and name.startswith("epsilon_") and value != "inf":
            raise BadEntry(index, f'`distributed.{name}` must be a number or "inf", got {value!r}.')
    if distributed["trust_model"] != "distributed" or distributed["budget_figure"] not in tuple(BudgetFigure):
        raise BadEntry(index, "`distributed` names an unknown trust model or budget figure.")
    positive = ("min_honest", "share_variance", "l2_sensitivity", "l1_sensitivity", "dim", "grid_step")
    if any(not distributed[name] > 0 for name in positive) or entry["steps"] != 1:
        raise BadEntry(index, "a distributed round is one step with t >= 1 and positive noise and sensitivities.")


def method_name(accountant: Accountant, conversion: EpsilonConversion | None) -> str:
    """ "rdp/balle2020", "prv": the accountant and conversion behind an ε."""
    return accountant.value + (f"/{conversion.value}" if conversion else "")


def format_epsilon(value: float | None) -> str:
    return "n/a" if value is None else ("inf" if math.isinf(value) else f"{value:.4f}")
