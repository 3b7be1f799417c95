"""Reading and verifying a ledger: format, chain, signatures and every recorded ε, naming the first
bad entry. The site walks its ledger with this before it plans a round; the auditor verifies with it."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common import keys
from common.accounting import Accountant, BudgetFigure, DPEvent, SkellamEvent, compute_epsilon
from common.errors import ConfigError, LedgerError
from common.ledger.entry import (
    EVENT_FIELDS,
    GENESIS_SHA256,
    NOISE_SOURCES,
    PHASES,
    SHA256_HEX,
    SPENDING_KINDS,
    BadEntry,
    EntryKind,
    Sampling,
    canonical,
    check_distributed,
    conversion_of,
    decoded,
    event_of,
    format_epsilon,
    parse_entry,
)
from common.schema import decode_epsilon

EPSILON_REL_TOL = 1e-9
"""A recorded ε must recompute to this relative tolerance (same code, same inputs: float noise only)."""


@dataclass(frozen=True)
class VerifyResult:
    """`ok`, or the FIRST bad entry (0-based line index) and why."""

    ok: bool
    entries: int
    first_bad_index: int | None = None
    reason: str | None = None
    epsilon_total: float | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ledger OK: {self.entries} entries, epsilon_total {format_epsilon(self.epsilon_total)}"
        return f"ledger INVALID at entry {self.first_bad_index}: {self.reason}"


@dataclass
class ChainState:
    """What a walk over the entries leaves: counted events and open reservations."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    events: list[DPEvent | SkellamEvent] = field(default_factory=list)
    open_reservations: set[int] = field(default_factory=set)

    @property
    def last_sha256(self) -> str:
        return hashlib.sha256(self.lines[-1]).hexdigest() if self.lines else GENESIS_SHA256

    def add(self, entry: dict[str, Any], line: bytes, event: DPEvent | SkellamEvent | None) -> None:
        """Count `entry` (written as `line`); `event` is what it spends, if anything."""
        if event is not None:
            self.events.append(event)
        if entry["kind"] == EntryKind.RESERVE:
            self.open_reservations.add(entry["index"])
        elif entry["kind"] == EntryKind.ROUND:
            self.open_reservations.discard(entry["reservation"])
        self.entries.append(entry)
        self.lines.append(line)


def verify_ledger(path: str | Path, public_key: Ed25519PublicKey | None) -> VerifyResult:
    """Check format, chain, signatures (by `public_key`) and every recorded ε; name the first bad entry.

    `public_key=None` checks against the key embedded in the first entry: that catches corruption and
    edits by anyone without the site's key, but authenticity needs the site's key from elsewhere.
    """
    path = Path(path)
    try:
        lines = read_lines(path)
    except BadEntry as err:
        return VerifyResult(ok=False, entries=err.index, first_bad_index=err.index, reason=err.reason)
    if not lines:
        return VerifyResult(ok=True, entries=0, epsilon_total=0.0)
    try:
        if public_key is None:
            public_hex = parse_entry(0, lines[0])["site_public_key"]
            keys.public_key_from_raw(bytes.fromhex(public_hex))
        else:
            public_hex = keys.public_key_raw(public_key).hex()
        state = walk(lines, public_hex, check_epsilon=True)
    except ConfigError as err:  # the embedded key is not an Ed25519 key
        return VerifyResult(ok=False, entries=len(lines), first_bad_index=0, reason=str(err))
    except BadEntry as err:
        return VerifyResult(ok=False, entries=len(lines), first_bad_index=err.index, reason=err.reason)
    total = decode_epsilon(state.entries[-1]["epsilon_total"]) if state.entries else 0.0
    return VerifyResult(ok=True, entries=len(lines), epsilon_total=total)


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Parsed entries, WITHOUT verification (use `verify_ledger` for that); ε fields as floats."""
    entries = []
    try:
        for index, line in enumerate(read_lines(Path(path))):
            entries.append(decoded(parse_entry(index, line)))
    except BadEntry as err:
        raise LedgerError(f"{path}: {err}") from None
    return entries


def iter_rounds(entries: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str]]:
    """(entry, status) per spend: each `round` entry ("recorded"), each reservation never completed,
    and each evaluation release ("evaluation")."""
    completed = {e["reservation"] for e in entries if e["kind"] == EntryKind.ROUND}
    for entry in entries:
        if entry["kind"] == EntryKind.ROUND:
            yield entry, "recorded"
        elif entry["kind"] == EntryKind.EVALUATION:
            yield entry, "evaluation"
        elif entry["kind"] == EntryKind.RESERVE and entry["index"] not in completed:
            yield entry, "reserved, never completed"


def embedded_public_key(path: str | Path) -> str | None:
    """Hex of the public key named in the first entry (None for an empty ledger)."""
    entries = read_ledger(path)
    return entries[0]["site_public_key"] if entries else None


def read_lines(path: Path) -> list[bytes]:
    """The ledger's lines without their newlines; `BadEntry` for an interrupted last line,
    `LedgerError` when the file is missing or unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"ledger {path} does not exist.") from None
    except OSError as err:
        raise LedgerError(f"cannot read ledger {path}: {err.strerror}") from None
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise BadEntry(
            len(lines) - 1,
            "incomplete last line (no newline): a write was interrupted. Nothing was sent for it; "
            "inspect and remove that line only, then verify.",
        )
    return lines[:-1]


def walk(lines: list[bytes], public_hex: str, *, check_epsilon: bool) -> ChainState:
    """Check every entry in order; raise `BadEntry` at the first bad one."""
    public_key = keys.public_key_from_raw(bytes.fromhex(public_hex))
    state = ChainState()
    for index, line in enumerate(lines):
        entry = parse_entry(index, line)
        if entry["index"] != index:
            raise BadEntry(index, f"index field says {entry['index']}: entries deleted, inserted or reordered.")
        if entry["prev_sha256"] != state.last_sha256:
            raise BadEntry(
                index,
                "prev_sha256 does not match the previous entry: the chain is broken "
                "(an entry before it was edited, deleted, inserted or reordered).",
            )
        if entry["site_public_key"] != public_hex:
            fp = hashlib.sha256(bytes.fromhex(entry["site_public_key"])).hexdigest()[:16]
            raise BadEntry(index, f"signed with a different key (fingerprint {fp}...) than the site's.")
        unsigned = {k: v for k, v in entry.items() if k != "signature"}
        if not keys.verify(public_key, canonical(unsigned), bytes.fromhex(entry["signature"])):
            raise BadEntry(index, "signature invalid: the entry was modified after signing.")
        _check_semantics(index, entry, state)
        kind = EntryKind(entry["kind"])
        event = event_of(entry) if kind in SPENDING_KINDS else None
        if check_epsilon and kind is not EntryKind.RESTART:
            history = [*state.events, event] if event is not None else state.events
            _check_epsilon(index, entry, history, event or event_of(state.entries[entry["reservation"]]))
            if entry.get("distributed"):
                _check_distributed_epsilon(index, entry, state)
        state.add(entry, line, event)
    return state


def _check_semantics(index: int, entry: dict[str, Any], state: ChainState) -> None:
    if state.entries and entry["format"] < state.entries[-1]["format"]:
        raise BadEntry(index, f"format {entry['format']} after a format-{state.entries[-1]['format']} entry.")
    try:
        kind = EntryKind(entry["kind"])
        Accountant(entry["accountant"])
        Sampling(entry["sampling"])
        conversion_of(entry["epsilon_conversion"])
    except ValueError as err:
        raise BadEntry(index, f"bad field value: {err}.") from None
    if entry["dp_enabled"] != (entry["noise_multiplier"] > 0):
        raise BadEntry(index, "dp_enabled disagrees with noise_multiplier (a DP round needs noise > 0).")
    if entry["format"] >= 2:
        if entry["noise_source"] not in NOISE_SOURCES:
            raise BadEntry(index, f"unknown noise_source {entry['noise_source']!r} (one of {NOISE_SOURCES}).")
        if (entry["noise_source"] == "none") == entry["dp_enabled"]:
            raise BadEntry(index, 'noise_source disagrees with dp_enabled ("none" exactly when DP is off).')
    elif kind in (EntryKind.EVALUATION, EntryKind.RESTART):
        raise BadEntry(index, f"a `{kind}` entry needs ledger format 2.")
    if entry["format"] >= 3:
        trains = kind in (EntryKind.RESERVE, EntryKind.ROUND)
        if (entry["phase"] in PHASES) != trains or (not trains and entry["phase"] is not None):
            raise BadEntry(index, f"`phase` {entry['phase']!r}: one of {PHASES} on a training entry, else null.")
    if entry["format"] >= 4:
        check_distributed(index, entry)
        if entry["distributed"] is not None and kind not in (EntryKind.RESERVE, EntryKind.ROUND):
            raise BadEntry(index, f"a `{kind}` entry cannot be a distributed round.")
    if kind is EntryKind.RESTART:
        zero = ("noise_multiplier", "sample_rate", "steps", "epsilon_round", "epsilon_total")
        if index != 0 or entry["reservation"] is not None or any(entry[name] != 0 for name in zero):
            raise BadEntry(index, "a restart entry must be entry 0, spend nothing and reference no reservation.")
        head = entry["update_sha256"]
        if head is not None and not SHA256_HEX.fullmatch(head):
            raise BadEntry(index, "a restart entry's `update_sha256` (the lost head) must be null or 64 hex digits.")
        return
    if kind is EntryKind.EVALUATION:
        if entry["reservation"] is not None or entry["sample_rate"] != 1 or entry["steps"] != 1:
            raise BadEntry(index, "an evaluation entry is one release (q = 1, 1 step) and references nothing.")
        if entry["update_sha256"] is None or not SHA256_HEX.fullmatch(entry["update_sha256"]):
            raise BadEntry(index, "an evaluation entry needs the evaluated adapter's sha256.")
        return
    if kind is EntryKind.ROUND:
        reservation = entry["reservation"]
        if reservation not in state.open_reservations:
            raise BadEntry(index, f"completes reservation {reservation}, which is not an open reservation.")
        reserved = state.entries[reservation]
        if reserved["format"] != entry["format"]:
            raise BadEntry(index, f"format {entry['format']} completes a format-{reserved['format']} reservation.")
        since = (
            (("noise_source",) if entry["format"] >= 2 else ())
            + (("phase",) if entry["format"] >= 3 else ())
            + (("distributed",) if entry["format"] >= 4 else ())
        )
        for name in (*EVENT_FIELDS, *since):
            if entry[name] != reserved[name]:
                raise BadEntry(index, f"`{name}` {entry[name]!r} differs from its reservation {reservation}.")
        if entry["update_sha256"] is None or not SHA256_HEX.fullmatch(entry["update_sha256"]):
            raise BadEntry(index, "a round entry needs `update_sha256` (64 lowercase hex digits).")
    elif entry["reservation"] is not None:
        raise BadEntry(index, "a reserve entry must not reference a reservation.")


def _check_distributed_epsilon(index: int, entry: dict[str, Any], state: ChainState) -> None:
    """Both figures of a distributed round, recomputed from every spending entry so far under each."""
    spent = [e for e in state.entries if EntryKind(e["kind"]) in SPENDING_KINDS]
    if entry["kind"] in SPENDING_KINDS:
        spent.append(entry)
    this = entry if entry["kind"] in SPENDING_KINDS else state.entries[entry["reservation"]]
    for figure, suffix in ((BudgetFigure.SUM, "sum"), (BudgetFigure.OWN_NOISE, "own")):
        for name, history in (
            (f"epsilon_round_{suffix}", [event_of(this, figure)]),
            (f"epsilon_total_{suffix}", [event_of(e, figure) for e in spent]),
        ):
            recorded = decode_epsilon(entry["distributed"][name])
            expected = compute_epsilon(history, delta=entry["delta"])
            if not (recorded == expected or math.isclose(recorded, expected, rel_tol=EPSILON_REL_TOL)):
                raise BadEntry(
                    index,
                    f"distributed.{name} recorded {format_epsilon(recorded)} but the events recompute to "
                    f"{format_epsilon(expected)}.",
                )


def _check_epsilon(
    index: int, entry: dict[str, Any], events: list[DPEvent | SkellamEvent], event: DPEvent | SkellamEvent
) -> None:
    accountant = Accountant(entry["accountant"])
    conversion = conversion_of(entry["epsilon_conversion"])
    for name, history in (("epsilon_round", [event]), ("epsilon_total", events)):
        recorded = decode_epsilon(entry[name])
        try:
            expected = compute_epsilon(history, delta=entry["delta"], accountant=accountant, conversion=conversion)
        except ConfigError as err:
            raise BadEntry(index, f"cannot recompute {name}: {err}") from None
        same = recorded == expected or math.isclose(recorded, expected, rel_tol=EPSILON_REL_TOL)
        if not same:
            raise BadEntry(
                index,
                f"{name} recorded {format_epsilon(recorded)} but the events recompute to {format_epsilon(expected)}.",
            )
