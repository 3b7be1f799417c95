"""A new ledger entry as the site writes it: the fields every entry gets beyond its event (format,
index, time, code version, the site's key, the link to the previous line), its ε fields encoded, its
signature; and the `distributed` object a distributed-noise round records (both ε figures).

The site's writer (client/ledger.py) appends what this builds; `verify.walk` checks the same layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import keys
from common.accounting import BudgetFigure, compute_epsilon
from common.distributed_dp import DistributedRound
from common.ledger.entry import (
    EPSILON_FIELDS,
    LEDGER_FORMAT,
    SPENDING_KINDS,
    EntryKind,
    canonical,
    encode_epsilon,
    event_of,
)
from common.version import CODE_VERSION


def new_entry(
    key: Ed25519PrivateKey, public_hex: str, *, index: int, prev_sha256: str, **fields: Any
) -> dict[str, Any]:
    """Entry `index` made of `fields`, chained to the line whose sha256 is `prev_sha256`, signed with `key`."""
    entry: dict[str, Any] = {
        "phase": None,  # training entries name theirs; evaluation and restart entries have none
        "distributed": None,  # a distributed-noise round's mechanism and figures; null otherwise
        **fields,
        "format": LEDGER_FORMAT,
        "index": index,
        "kind": EntryKind(fields["kind"]).value,
        "timestamp": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "code_version": CODE_VERSION,
        "site_public_key": public_hex,
        "prev_sha256": prev_sha256,
    }
    for name in EPSILON_FIELDS:
        entry[name] = encode_epsilon(entry[name])
    entry["signature"] = keys.sign(key, canonical(entry)).hex()
    return entry


def distributed_record(
    distributed: DistributedRound, entries: Iterable[dict[str, Any]], *, delta: float
) -> dict[str, Any]:
    """The entry's `distributed` object: the mechanism and both ε figures, round and total, after `entries`."""
    spent = [e for e in entries if EntryKind(e["kind"]) in SPENDING_KINDS]
    record: dict[str, Any] = {
        "trust_model": "distributed",
        "min_honest": distributed.min_honest,
        "budget_figure": str(distributed.budget_figure),
        "share_variance": distributed.share_variance,
        "l2_sensitivity": distributed.l2_sensitivity,
        "l1_sensitivity": distributed.l1_sensitivity,
        "l2_clip": distributed.l2_clip,
        "dim": distributed.dim,
        "grid_step": distributed.grid_step,
    }
    for figure, suffix in ((BudgetFigure.SUM, "sum"), (BudgetFigure.OWN_NOISE, "own")):
        this = distributed.event(figure)
        history = [*(event_of(e, figure) for e in spent), this]
        record[f"epsilon_round_{suffix}"] = encode_epsilon(compute_epsilon([this], delta=delta))
        record[f"epsilon_total_{suffix}"] = encode_epsilon(compute_epsilon(history, delta=delta))
    return record
