"""The site's privacy ledger: an append-only, hash-chained, signed JSONL file.

One line per entry, each the canonical JSON (sorted keys, no spaces, ASCII) of one entry. Every entry
holds `prev_sha256`, the sha256 of the previous line's bytes (64 zeros for the first), and
`signature`, the site's Ed25519 signature of its own canonical JSON without `signature`.

Two kinds of entry, because a round spends privacy from the moment it is planned:

- `reserve`: written by `plan_round`, BEFORE training, once the budget check passed. It carries the
  round's DP event `(noise_multiplier, sample_rate, steps)` and counts as spent from then on.
- `round`: written by `record_round` after training, before the update leaves the site. It completes
  one reservation (`reservation` = its index), repeats its event, and adds the update's sha256, the
  dataset size and the clipping norm.

Two more kinds (ledger format 2):

- `evaluation`: a DP release of statistics about the site's hold-out records (client/privacy.py
  `release_evaluation`), written before the answer is sent. Its event `(noise_multiplier, 1.0, 1)` is a
  Gaussian mechanism and counts as spent like any reservation; `update_sha256` names the adapter that
  was evaluated.
- `restart`: only ever entry 0, written by `silo ledger restart` when an operator deliberately starts a
  new ledger after losing one; `update_sha256` holds the lost ledger's last known head (or null).

Every format-2 entry records `noise_source`: where the randomness behind its ε came from ("os-seeded",
"caller-generator" in tests, "none" without DP). Format-1 entries, written before fresh noise existed,
have no such field; their ε claims are void and `silo audit verify` says so.

The head. After every append the ledger writes `<ledger>.head`: the entry count and the sha256 of the last
line, signed with the site's key. `Ledger.open` refuses a ledger that is missing while the site's key
exists, shorter than its head, or whose entry at the head's position is not the one the head signed:
a lost, truncated or replaced ledger would otherwise restart the budget at ε = 0. New ledgers are made
only deliberately: `create=True` when a site's key is made, or `silo ledger restart` (recorded).

A crash between plan and record leaves the reservation in place: it stays spent forever, so no later
run can overspend (fail closed; `silo budget` shows it as "reserved, never completed"). On top of that,
a `Ledger` holds an exclusive `flock` on `<ledger>.lock` from `open` to `close`, so two runs at once
cannot interleave their plans. Hold it across the whole round: open -> plan -> train -> record -> close.

ε of an entry: `epsilon_round` is the ε of its event alone; `epsilon_total` is the ε of the composition
of EVERY reserved event up to and including this entry (across runs and restarts), recomputed from the
events with the entry's accountant, conversion and δ, never a sum of per-round ε.

A round trained without DP (`dp_enabled: false`) has `noise_multiplier` 0 and ε = inf; from then on the
ledger's total is inf, which only a site whose config says `budget_epsilon = inf` accepts. Infinite
ε is written as the string "inf" so that the file stays strict JSON.

The verifier catches any edited, deleted, inserted or reordered entry, and names the first bad one.
Truncating the TAIL of the file cannot be detected from the file alone: compare the last entry with
the coordinator's record of the site's last update (its sha256) for that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common import keys
from common.accounting import Accountant, DPEvent, EpsilonConversion, compute_epsilon, default_conversion
from common.errors import BudgetExhausted, ConfigError, LedgerError
from common.version import CODE_VERSION

LEDGER_FORMAT = 2
"""Version of the entry layout written now; bump when fields change meaning. 2 added `noise_source` and
the `evaluation` and `restart` kinds; format-1 entries still verify (their ε claims are void)."""

READABLE_FORMATS = (1, 2)

GENESIS_SHA256 = "0" * 64
"""`prev_sha256` of the first entry: there is no previous line."""

EPSILON_REL_TOL = 1e-9
"""A recorded ε must recompute to this relative tolerance (same code, same inputs: float noise only)."""

LOCK_POLL_SECONDS = 0.05
"""How often a waiting `Ledger.open` retries the lock."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class EntryKind(StrEnum):
    RESERVE = "reserve"
    ROUND = "round"
    EVALUATION = "evaluation"
    RESTART = "restart"


_SPENDING_KINDS = (EntryKind.RESERVE, EntryKind.EVALUATION)
"""Entries whose event counts as spent."""


class Sampling(StrEnum):
    """Sampling assumption behind the recorded ε: the accountants are exact for Poisson only."""

    POISSON = "poisson"
    SHUFFLE = "shuffle"


_FIELDS: dict[str, tuple[type, ...]] = {
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

_FIELDS_BY_FORMAT: dict[int, dict[str, tuple[type, ...]]] = {
    1: _FIELDS,
    2: {**_FIELDS, "noise_source": (str,)},
}
"""Format 2 adds `noise_source`."""

NOISE_SOURCES = ("os-seeded", "caller-generator", "none")
"""client.privacy.NoiseSource's values; only "os-seeded" backs an ε claim."""

_EPSILON_FIELDS = ("epsilon_round", "epsilon_total", "budget_epsilon")
"""Written as numbers, or the string "inf" (strict JSON has no infinity)."""

_EVENT_FIELDS = (
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
            return f"ledger OK: {self.entries} entries, epsilon_total {_fmt(self.epsilon_total)}"
        return f"ledger INVALID at entry {self.first_bad_index}: {self.reason}"


class _BadEntry(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}")
        self.index, self.reason = index, reason


@dataclass
class _State:
    """What a walk over the entries leaves: counted events and open reservations."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    events: list[DPEvent] = field(default_factory=list)
    open_reservations: set[int] = field(default_factory=set)

    @property
    def last_sha256(self) -> str:
        return hashlib.sha256(self.lines[-1]).hexdigest() if self.lines else GENESIS_SHA256


class Ledger:
    """An open, locked ledger. Use `Ledger.open(...)` as a context manager."""

    def __init__(self, path: Path, *, signing_key: Ed25519PrivateKey, lock_fd: int, state: _State) -> None:
        self.path = path
        self._key = signing_key
        self._public_hex = keys.public_key_raw(signing_key).hex()
        self._lock_fd: int | None = lock_fd
        self._state = state

    @classmethod
    def open(
        cls, path: str | Path, *, signing_key: Ed25519PrivateKey, lock_timeout: float = 0.0, create: bool = False
    ) -> Ledger:
        """Lock `path` and read it, checking chain, signatures and the signed head.

        `create=True` starts an empty ledger when none exists: only for a site whose signing key is
        new. Otherwise a missing ledger is refused, as is one shorter than its head or differing from
        it (`LedgerError`): a lost ledger must not restart the budget. Also `LedgerError` when another
        process or run holds the lock after `lock_timeout` seconds, or when the file fails
        verification (a tampered ledger must not be spent from).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _acquire_lock(path, timeout=lock_timeout)
        public_hex = keys.public_key_raw(signing_key).hex()
        try:
            if not path.exists():
                if not create or _head_path(path).exists():
                    raise LedgerError(_lost_ledger_message(path, "is missing"))
                _create_empty(path)
            state = _walk(_read_lines(path), public_hex, check_epsilon=False)
            _check_head(path, state, public_hex)
        except _BadEntry as err:
            _release_lock(lock_fd)
            raise LedgerError(f"{path}: {err} Refusing to plan rounds on a ledger that fails verification.") from None
        except BaseException:
            _release_lock(lock_fd)
            raise
        return cls(path, signing_key=signing_key, lock_fd=lock_fd, state=state)

    def close(self) -> None:
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------------

    def history(self) -> list[DPEvent]:
        """Every event that counts as spent (reservations, completed or not), in ledger order."""
        return list(self._state.events)

    def spent(
        self,
        *,
        delta: float,
        accountant: Accountant = Accountant.RDP,
        conversion: EpsilonConversion | None = EpsilonConversion.BALLE2020,
    ) -> float:
        """ε of the composed history at `delta`."""
        return compute_epsilon(self._state.events, delta=delta, accountant=accountant, conversion=conversion)

    def entries(self) -> list[dict[str, Any]]:
        """The entries as written, with ε fields as floats."""
        return [_decoded(e) for e in self._state.entries]

    # ---- writing -------------------------------------------------------------------------------

    def plan_round(
        self,
        *,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        delta: float,
        accountant: Accountant,
        budget_epsilon: float,
        budget_delta: float,
        conversion: EpsilonConversion | None = None,
        dp_enabled: bool = True,
        poisson_sampling: bool = True,
        run_id: str | None = None,
        round: int | None = None,
        site_id: str | None = None,
        noise_source: str | None = None,
        also_fits: Iterable[DPEvent] = (),
    ) -> RoundPlan:
        """Check the budget and reserve the round, BEFORE any training.

        `conversion` defaults to Opacus 1.6's for `accountant`. With `dp_enabled=False` the round is
        recorded with noise 0 and ε = inf. `noise_source` defaults to "os-seeded" (DP) or "none"; the
        round entry must record the same. `also_fits`: events the caller will spend after this one in
        the same round (its evaluation release), which must fit the budget too. Raises
        `BudgetExhausted` (nothing written) when the composed total would exceed `budget_epsilon`;
        `ConfigError` when `delta > budget_delta`.
        """
        self._check_open()
        noise_source = _noise_source(noise_source, dp_enabled=dp_enabled)
        accountant = Accountant(accountant)
        if conversion is None:
            conversion = default_conversion(accountant)
        if not 0 < budget_delta < 1:
            raise ConfigError(f"`budget_delta` must be in (0, 1), got {budget_delta}.")
        if not 0 < delta <= budget_delta:
            raise ConfigError(f"`delta` must be in (0, budget_delta={budget_delta}], got {delta}.")
        if not budget_epsilon > 0:
            raise ConfigError(f"`budget_epsilon` must be > 0, got {budget_epsilon}.")
        if dp_enabled and not noise_multiplier > 0:
            raise ConfigError(
                f"`noise_multiplier` must be > 0 when DP is enabled, got {noise_multiplier}; "
                "a site without DP must say so with `enabled = false`."
            )
        if not dp_enabled:
            noise_multiplier = 0.0
        event = DPEvent(float(noise_multiplier), float(sample_rate), steps)
        also = list(also_fits)
        before, after, epsilon_round = self._afford(
            event,
            also,
            delta=delta,
            accountant=accountant,
            conversion=conversion,
            budget_epsilon=budget_epsilon,
            what=f"site {site_id or '?'}: this round" + (", with its evaluation," if also else ""),
            nothing="trained",
        )
        entry = self._append(
            kind=EntryKind.RESERVE,
            reservation=None,
            run_id=run_id,
            round=round,
            site_id=site_id,
            dp_enabled=dp_enabled,
            noise_multiplier=event.noise_multiplier,
            sample_rate=event.sample_rate,
            steps=steps,
            sampling=(Sampling.POISSON if poisson_sampling else Sampling.SHUFFLE).value,
            max_grad_norm=None,
            dataset_size=None,
            accountant=accountant.value,
            epsilon_conversion=conversion.value if conversion else None,
            delta=float(delta),
            epsilon_round=epsilon_round,
            epsilon_total=after,
            budget_epsilon=budget_epsilon,
            budget_delta=float(budget_delta),
            update_sha256=None,
            noise_source=noise_source,
            new_event=event,
        )
        return RoundPlan(
            reservation_index=entry["index"],
            reservation_sha256=self._state.last_sha256,
            noise_multiplier=event.noise_multiplier,
            sample_rate=event.sample_rate,
            steps=steps,
            delta=float(delta),
            accountant=accountant,
            conversion=conversion,
            dp_enabled=dp_enabled,
            epsilon_round=epsilon_round,
            epsilon_total_before=before,
            epsilon_total_after=after,
            budget_epsilon=budget_epsilon,
            budget_delta=float(budget_delta),
            noise_source=noise_source,
        )

    def record_round(
        self,
        plan: RoundPlan,
        *,
        run_id: str,
        round: int,
        site_id: str,
        max_grad_norm: float | None,
        dataset_size: int,
        update_sha256: str,
        accountant_history: Iterable[tuple[float, float, int]] | None = None,
        noise_source: str | None = None,
    ) -> dict[str, Any]:
        """Complete `plan`'s reservation after training, before the update is sent; append + fsync.

        `accountant_history` (pass `PrivateTraining.history()`): what Opacus' accountant counted this
        round. It must be the plan's (noise_multiplier, sample_rate) for at most the reserved steps;
        otherwise the ledger would understate the privacy spent, and `LedgerError` says not to send.
        `noise_source` (pass `PrivateTraining.noise_source`) must be the one the plan reserved.
        """
        self._check_open()
        noise_source = _noise_source(noise_source, dp_enabled=plan.dp_enabled)
        if noise_source != plan.noise_source:
            raise LedgerError(
                f"trained with noise source {noise_source!r} but reserved {plan.noise_source!r} "
                f"(entry {plan.reservation_index}): do not send this update."
            )
        index = plan.reservation_index
        if index not in self._state.open_reservations:
            raise LedgerError(f"{self.path}: reservation {index} is not open in this ledger (recorded twice?).")
        reserved = self._state.entries[index]
        if hashlib.sha256(self._state.lines[index]).hexdigest() != plan.reservation_sha256:
            raise LedgerError(f"{self.path}: plan does not match reservation entry {index}.")
        if accountant_history is not None:
            _check_trained_within(plan, list(accountant_history), index)
        if not _SHA256_HEX.fullmatch(update_sha256):
            raise LedgerError(f"`update_sha256` must be 64 lowercase hex digits, got {update_sha256!r}.")
        for name, value in (("run_id", run_id), ("round", round), ("site_id", site_id)):
            if reserved[name] is not None and reserved[name] != value:
                raise LedgerError(
                    f"{self.path}: `{name}` {value!r} differs from reservation entry {index} ({reserved[name]!r})."
                )
        accountant = Accountant(reserved["accountant"])
        conversion = _conversion(reserved["epsilon_conversion"])
        total = compute_epsilon(
            self._state.events, delta=reserved["delta"], accountant=accountant, conversion=conversion
        )
        return self._append(
            kind=EntryKind.ROUND,
            reservation=index,
            run_id=run_id,
            round=round,
            site_id=site_id,
            max_grad_norm=None if max_grad_norm is None else float(max_grad_norm),
            dataset_size=dataset_size,
            epsilon_total=total,
            budget_epsilon=plan.budget_epsilon,
            budget_delta=plan.budget_delta,
            update_sha256=update_sha256,
            noise_source=noise_source,
            new_event=None,
            **{name: reserved[name] for name in _EVENT_FIELDS if name != "epsilon_round"},
            epsilon_round=_decode_epsilon(reserved["epsilon_round"]),
        )

    def require_budget(
        self, events: Iterable[DPEvent], *, delta: float, accountant: Accountant, budget_epsilon: float, what: str
    ) -> None:
        """Raise `BudgetExhausted` unless the recorded history composed with `events` fits the budget."""
        self._check_open()
        first, *rest = list(events)
        accountant = Accountant(accountant)
        self._afford(
            first,
            rest,
            delta=delta,
            accountant=accountant,
            conversion=default_conversion(accountant),
            budget_epsilon=budget_epsilon,
            what=what,
            nothing="evaluated, trained",
        )

    def _afford(
        self,
        event: DPEvent,
        also: list[DPEvent],
        *,
        delta: float,
        accountant: Accountant,
        conversion: EpsilonConversion | None,
        budget_epsilon: float,
        what: str,
        nothing: str,
    ) -> tuple[float, float, float]:
        """(ε before, ε after `event`, ε of `event` alone), or `BudgetExhausted` when the history composed
        with `event` and then `also` would pass `budget_epsilon`."""

        def epsilon_of(events: list[DPEvent]) -> float:
            return compute_epsilon(events, delta=delta, accountant=accountant, conversion=conversion)

        before = epsilon_of(self._state.events)
        after = epsilon_of([*self._state.events, event])
        with_also = epsilon_of([*self._state.events, event, *also]) if also else after
        epsilon_event = epsilon_of([event])
        if with_also > budget_epsilon:
            raise BudgetExhausted(
                f"privacy budget would be exceeded: spent epsilon={_fmt(before)} (delta={delta}, "
                f"{_method(accountant, conversion)}) so far; {what} (epsilon={_fmt(epsilon_event)}) would bring "
                f"it to {_fmt(with_also)} > budget {_fmt(budget_epsilon)}. Nothing {nothing} or sent."
            )
        return before, after, epsilon_event

    def charge_evaluation(
        self,
        event: DPEvent,
        *,
        delta: float,
        accountant: Accountant,
        budget_epsilon: float,
        budget_delta: float,
        dataset_size: int,
        evaluated_sha256: str,
        noise_source: str,
        run_id: str | None = None,
        round: int | None = None,
        site_id: str | None = None,
        also_fits: Iterable[DPEvent] = (),
    ) -> dict[str, Any]:
        """Record a DP release about hold-out records BEFORE it is sent; it counts as spent from now on.

        `event` is the release's Gaussian mechanism (client.privacy.release_evaluation); a release
        without DP has noise 0 (ε = inf, for sites with `budget_epsilon = inf` only). `also_fits`: events
        the caller will spend after this one in the same round (the training it precedes). Raises
        `BudgetExhausted`, writing nothing, when the composed total would exceed `budget_epsilon`.
        """
        self._check_open()
        accountant = Accountant(accountant)
        conversion = default_conversion(accountant)
        dp_enabled = event.noise_multiplier > 0
        if event.sample_rate != 1.0 or event.steps != 1:
            raise LedgerError(f"an evaluation release is one Gaussian mechanism (q = 1, 1 step), got {event}.")
        if not _SHA256_HEX.fullmatch(evaluated_sha256):
            raise LedgerError(f"`evaluated_sha256` must be 64 lowercase hex digits, got {evaluated_sha256!r}.")
        if not 0 < delta <= budget_delta < 1:
            raise ConfigError(f"`delta` must be in (0, budget_delta={budget_delta}], got {delta}.")
        also = list(also_fits)
        _, after, epsilon_round = self._afford(
            event,
            also,
            delta=delta,
            accountant=accountant,
            conversion=conversion,
            budget_epsilon=budget_epsilon,
            what=f"site {site_id or '?'}: this evaluation" + (" and the training after it" if also else ""),
            nothing="evaluated",
        )
        return self._append(
            kind=EntryKind.EVALUATION,
            reservation=None,
            run_id=run_id,
            round=round,
            site_id=site_id,
            dp_enabled=dp_enabled,
            noise_multiplier=float(event.noise_multiplier),
            sample_rate=1.0,
            steps=1,
            sampling=Sampling.POISSON.value,  # q = 1: every hold-out record, no sampling to assume
            max_grad_norm=None,
            dataset_size=dataset_size,
            accountant=accountant.value,
            epsilon_conversion=conversion.value if conversion else None,
            delta=float(delta),
            epsilon_round=epsilon_round,
            epsilon_total=after,
            budget_epsilon=budget_epsilon,
            budget_delta=float(budget_delta),
            update_sha256=evaluated_sha256,
            noise_source=_noise_source(noise_source, dp_enabled=dp_enabled),
            new_event=event,
        )

    def _append(self, *, new_event: DPEvent | None, **fields: Any) -> dict[str, Any]:
        state = self._state
        entry: dict[str, Any] = {
            **fields,
            "format": LEDGER_FORMAT,
            "index": len(state.entries),
            "kind": EntryKind(fields["kind"]).value,
            "timestamp": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "code_version": CODE_VERSION,
            "site_public_key": self._public_hex,
            "prev_sha256": state.last_sha256,
        }
        for name in _EPSILON_FIELDS:
            entry[name] = _encode_epsilon(entry[name])
        entry["signature"] = keys.sign(self._key, _canonical(entry)).hex()
        line = _canonical(entry) + b"\n"
        _append_line(self.path, line)
        state.entries.append(entry)
        state.lines.append(line[:-1])
        if new_event is not None:
            state.events.append(new_event)
        if entry["kind"] == EntryKind.RESERVE:
            state.open_reservations.add(entry["index"])
        elif entry["kind"] == EntryKind.ROUND:
            state.open_reservations.discard(entry["reservation"])
        _write_head(self.path, self._key, entries=len(state.entries), last_sha256=state.last_sha256)
        return dict(entry)

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise LedgerError(f"{self.path}: ledger is closed.")


def _check_trained_within(plan: RoundPlan, history: list[tuple[float, float, int]], index: int) -> None:
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


# ---- verification -------------------------------------------------------------------------------


def verify_ledger(path: str | Path, public_key: Ed25519PublicKey | None) -> VerifyResult:
    """Check format, chain, signatures (by `public_key`) and every recorded ε; name the first bad entry.

    `public_key=None` checks against the key embedded in the first entry: that catches corruption and
    edits by anyone without the site's key, but authenticity needs the site's key from elsewhere.
    """
    path = Path(path)
    try:
        lines = _read_lines(path)
    except _BadEntry as err:
        return VerifyResult(ok=False, entries=err.index, first_bad_index=err.index, reason=err.reason)
    if not lines:
        return VerifyResult(ok=True, entries=0, epsilon_total=0.0)
    try:
        if public_key is None:
            public_hex = _parse(0, lines[0])["site_public_key"]
            keys.public_key_from_raw(bytes.fromhex(public_hex))
        else:
            public_hex = keys.public_key_raw(public_key).hex()
        state = _walk(lines, public_hex, check_epsilon=True)
    except ConfigError as err:  # the embedded key is not an Ed25519 key
        return VerifyResult(ok=False, entries=len(lines), first_bad_index=0, reason=str(err))
    except _BadEntry as err:
        return VerifyResult(ok=False, entries=len(lines), first_bad_index=err.index, reason=err.reason)
    total = _decode_epsilon(state.entries[-1]["epsilon_total"]) if state.entries else 0.0
    return VerifyResult(ok=True, entries=len(lines), epsilon_total=total)


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Parsed entries, WITHOUT verification (use `verify_ledger` for that); ε fields as floats."""
    entries = []
    try:
        for index, line in enumerate(_read_lines(Path(path))):
            entries.append(_decoded(_parse(index, line)))
    except _BadEntry as err:
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


def export_ledger(path: str | Path, out: str | Path) -> Path:
    """Write what an auditor needs into directory `out`: the ledger bytes, the site's public key (PEM)
    and a manifest (fingerprint, entry count, file sha256, self-verification). No secrets, no records.

    The embedded key only proves self-consistency: the auditor must compare `site_public_key_fingerprint`
    with the fingerprint the site registered with the federation.
    """
    path, out = Path(path), Path(out)
    public_hex = embedded_public_key(path)
    if public_hex is None:
        raise LedgerError(f"{path}: ledger is empty; nothing to export.")
    public_key = keys.public_key_from_raw(bytes.fromhex(public_hex))
    out.mkdir(parents=True, exist_ok=True)
    ledger_out, key_out, manifest_out = (
        out / "ledger.jsonl",
        out / "site_public_key.pem",
        out / "manifest.json",
    )
    for target in (ledger_out, key_out, manifest_out):
        if target.exists():
            raise LedgerError(f"refusing to overwrite {target}.")
    shutil.copyfile(path, ledger_out)
    keys.save_public_key(public_key, key_out)
    result = verify_ledger(ledger_out, public_key)
    manifest = {
        "ledger_format": LEDGER_FORMAT,
        "ledger_file": ledger_out.name,
        "ledger_sha256": hashlib.sha256(ledger_out.read_bytes()).hexdigest(),
        "entries": result.entries,
        "site_public_key_file": key_out.name,
        "site_public_key_fingerprint": keys.fingerprint(public_key),
        "self_verification": {
            "ok": result.ok,
            "first_bad_index": result.first_bad_index,
            "reason": result.reason,
        },
        "epsilon_total": None if result.epsilon_total is None else _encode_epsilon(result.epsilon_total),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "exported_by": CODE_VERSION,
    }
    manifest_out.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _walk(lines: list[bytes], public_hex: str, *, check_epsilon: bool) -> _State:
    """Check every entry in order; raise `_BadEntry` at the first bad one."""
    public_key = keys.public_key_from_raw(bytes.fromhex(public_hex))
    state = _State()
    for index, line in enumerate(lines):
        entry = _parse(index, line)
        if entry["index"] != index:
            raise _BadEntry(index, f"index field says {entry['index']}: entries deleted, inserted or reordered.")
        if entry["prev_sha256"] != state.last_sha256:
            raise _BadEntry(
                index,
                "prev_sha256 does not match the previous entry: the chain is broken "
                "(an entry before it was edited, deleted, inserted or reordered).",
            )
        if entry["site_public_key"] != public_hex:
            fp = hashlib.sha256(bytes.fromhex(entry["site_public_key"])).hexdigest()[:16]
            raise _BadEntry(index, f"signed with a different key (fingerprint {fp}...) than the site's.")
        unsigned = {k: v for k, v in entry.items() if k != "signature"}
        if not keys.verify(public_key, _canonical(unsigned), bytes.fromhex(entry["signature"])):
            raise _BadEntry(index, "signature invalid: the entry was modified after signing.")
        _check_semantics(index, entry, state)
        kind = EntryKind(entry["kind"])
        event = None
        if kind in _SPENDING_KINDS:
            event = _event_of(entry)
            state.events.append(event)
        if kind is EntryKind.RESERVE:
            state.open_reservations.add(index)
        elif kind is EntryKind.ROUND:
            state.open_reservations.discard(entry["reservation"])
        if check_epsilon and kind is not EntryKind.RESTART:
            _check_epsilon(index, entry, state.events, event or _event_of(state.entries[entry["reservation"]]))
        state.entries.append(entry)
        state.lines.append(line)
    return state


def _check_semantics(index: int, entry: dict[str, Any], state: _State) -> None:
    if state.entries and entry["format"] < state.entries[-1]["format"]:
        raise _BadEntry(index, f"format {entry['format']} after a format-{state.entries[-1]['format']} entry.")
    try:
        kind = EntryKind(entry["kind"])
        Accountant(entry["accountant"])
        Sampling(entry["sampling"])
        _conversion(entry["epsilon_conversion"])
    except ValueError as err:
        raise _BadEntry(index, f"bad field value: {err}.") from None
    if entry["dp_enabled"] != (entry["noise_multiplier"] > 0):
        raise _BadEntry(index, "dp_enabled disagrees with noise_multiplier (a DP round needs noise > 0).")
    if entry["format"] >= 2:
        if entry["noise_source"] not in NOISE_SOURCES:
            raise _BadEntry(index, f"unknown noise_source {entry['noise_source']!r} (one of {NOISE_SOURCES}).")
        if (entry["noise_source"] == "none") == entry["dp_enabled"]:
            raise _BadEntry(index, 'noise_source disagrees with dp_enabled ("none" exactly when DP is off).')
    elif kind in (EntryKind.EVALUATION, EntryKind.RESTART):
        raise _BadEntry(index, f"a `{kind}` entry needs ledger format 2.")
    if kind is EntryKind.RESTART:
        zero = ("noise_multiplier", "sample_rate", "steps", "epsilon_round", "epsilon_total")
        if index != 0 or entry["reservation"] is not None or any(entry[name] != 0 for name in zero):
            raise _BadEntry(index, "a restart entry must be entry 0, spend nothing and reference no reservation.")
        head = entry["update_sha256"]
        if head is not None and not _SHA256_HEX.fullmatch(head):
            raise _BadEntry(index, "a restart entry's `update_sha256` (the lost head) must be null or 64 hex digits.")
        return
    if kind is EntryKind.EVALUATION:
        if entry["reservation"] is not None or entry["sample_rate"] != 1 or entry["steps"] != 1:
            raise _BadEntry(index, "an evaluation entry is one release (q = 1, 1 step) and references nothing.")
        if entry["update_sha256"] is None or not _SHA256_HEX.fullmatch(entry["update_sha256"]):
            raise _BadEntry(index, "an evaluation entry needs the evaluated adapter's sha256.")
        return
    if kind is EntryKind.ROUND:
        reservation = entry["reservation"]
        if reservation not in state.open_reservations:
            raise _BadEntry(index, f"completes reservation {reservation}, which is not an open reservation.")
        reserved = state.entries[reservation]
        if reserved["format"] != entry["format"]:
            raise _BadEntry(index, f"format {entry['format']} completes a format-{reserved['format']} reservation.")
        for name in (*_EVENT_FIELDS, *(("noise_source",) if entry["format"] >= 2 else ())):
            if entry[name] != reserved[name]:
                raise _BadEntry(index, f"`{name}` {entry[name]!r} differs from its reservation {reservation}.")
        if entry["update_sha256"] is None or not _SHA256_HEX.fullmatch(entry["update_sha256"]):
            raise _BadEntry(index, "a round entry needs `update_sha256` (64 lowercase hex digits).")
    elif entry["reservation"] is not None:
        raise _BadEntry(index, "a reserve entry must not reference a reservation.")


def _check_epsilon(index: int, entry: dict[str, Any], events: list[DPEvent], event: DPEvent) -> None:
    accountant = Accountant(entry["accountant"])
    conversion = _conversion(entry["epsilon_conversion"])
    for name, history in (("epsilon_round", [event]), ("epsilon_total", events)):
        recorded = _decode_epsilon(entry[name])
        try:
            expected = compute_epsilon(history, delta=entry["delta"], accountant=accountant, conversion=conversion)
        except ConfigError as err:
            raise _BadEntry(index, f"cannot recompute {name}: {err}") from None
        same = recorded == expected or math.isclose(recorded, expected, rel_tol=EPSILON_REL_TOL)
        if not same:
            raise _BadEntry(
                index,
                f"{name} recorded {_fmt(recorded)} but the events recompute to {_fmt(expected)}.",
            )


def _event_of(entry: dict[str, Any]) -> DPEvent:
    return DPEvent(float(entry["noise_multiplier"]), float(entry["sample_rate"]), entry["steps"])


# ---- bytes on disk ------------------------------------------------------------------------------


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _parse(index: int, line: bytes) -> dict[str, Any]:
    def reject_constant(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    try:
        entry = json.loads(line.decode("ascii"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise _BadEntry(index, f"not valid JSON ({err}).") from None
    if not isinstance(entry, dict):
        raise _BadEntry(index, "not a JSON object.")
    fmt = entry.get("format")
    if isinstance(fmt, bool) or fmt not in _FIELDS_BY_FORMAT:
        raise _BadEntry(index, f"unknown format {fmt!r} (this code reads {READABLE_FORMATS}).")
    fields = _FIELDS_BY_FORMAT[fmt]
    if set(entry) != set(fields):
        extra, missing = sorted(set(entry) - set(fields)), sorted(set(fields) - set(entry))
        raise _BadEntry(index, f"wrong fields (unexpected {extra}, missing {missing}).")
    for name, types in fields.items():
        value = entry[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _BadEntry(index, f"`{name}` has the wrong type ({type(value).__name__}).")
    for name in _EPSILON_FIELDS:
        if isinstance(entry[name], str) and entry[name] != "inf":
            raise _BadEntry(index, f'`{name}` must be a number or "inf", got {entry[name]!r}.')
    for name in ("prev_sha256", "site_public_key", "signature"):
        if not re.fullmatch(r"(?:[0-9a-f]{2})+", entry[name]):
            raise _BadEntry(index, f"`{name}` must be lowercase hex.")
    if _canonical(entry) != line:
        raise _BadEntry(index, "not in canonical form (bytes were edited).")
    return entry


def _read_lines(path: Path) -> list[bytes]:
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
        raise _BadEntry(
            len(lines) - 1,
            "incomplete last line (no newline): a write was interrupted. Nothing was sent for it; "
            "inspect and remove that line only, then verify.",
        )
    return lines[:-1]


def _append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise LedgerError(f"{path}: short write ({written} of {len(line)} bytes); disk full?")
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_empty(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new file's directory entry survives a crash
    finally:
        os.close(dir_fd)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _acquire_lock(path: Path, *, timeout: float) -> int:
    lock_path = _lock_path(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise LedgerError(
                    f"ledger {path} is locked by another run ({holder}); waited {timeout:g} s. "
                    "Two runs may not train on one site's budget at once."
                ) from None
            time.sleep(LOCK_POLL_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}".encode(), 0)
    return fd


def _release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


HEAD_FORMAT = 1


def _write_head(path: Path, key: Ed25519PrivateKey, *, entries: int, last_sha256: str) -> None:
    """The signed head beside the ledger, replaced atomically (written, fsynced, renamed)."""
    head: dict[str, Any] = {
        "format": HEAD_FORMAT,
        "entries": entries,
        "last_sha256": last_sha256,
        "site_public_key": keys.public_key_raw(key).hex(),
    }
    head["signature"] = keys.sign(key, _canonical(head)).hex()
    target = _head_path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _canonical(head) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def read_head(path: str | Path, public_hex: str) -> tuple[int, str] | None:
    """(entries, sha256 of the last line) the ledger's signed head records; None without a head.
    Raises `LedgerError` when the head is unreadable or not signed by the site's key."""
    target = _head_path(Path(path))
    try:
        head = json.loads(target.read_bytes())
        unsigned = {k: v for k, v in head.items() if k != "signature"}
        signed = head["site_public_key"] == public_hex and keys.verify(
            keys.public_key_from_raw(bytes.fromhex(public_hex)), _canonical(unsigned), bytes.fromhex(head["signature"])
        )
        entries, last = int(head["entries"]), str(head["last_sha256"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        signed = False
    if not signed:
        raise LedgerError(_lost_ledger_message(Path(path), f"has a head ({target.name}) that is not the site's"))
    return entries, last


def _check_head(path: Path, state: _State, public_hex: str) -> None:
    """Refuse a ledger shorter than its signed head, or whose entry at the head is another one."""
    head = read_head(path, public_hex)
    if head is None:
        return
    entries, last = head
    if len(state.lines) < entries:
        raise LedgerError(
            _lost_ledger_message(path, f"has {len(state.lines)} entries but its signed head records {entries}")
        )
    if entries and hashlib.sha256(state.lines[entries - 1]).hexdigest() != last:
        raise LedgerError(_lost_ledger_message(path, f"differs from its signed head at entry {entries - 1}"))


def _lost_ledger_message(path: Path, what: str) -> str:
    return (
        f"privacy ledger {path} {what}: it was lost, truncated or replaced, and planning from it would "
        "restart this site's budget. Nothing trained. Restore the ledger from a backup; or, deliberately, "
        f"`silo ledger restart --ledger {path} --key <state_dir>/site_signing.key --confirm-budget-restart` "
        "starts a new ledger whose first entry records the restart."
    )


def restart_ledger(path: str | Path, *, signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Start a new ledger at `path` whose entry 0 records a deliberate restart (and the lost ledger's
    last head, when its head file survives); the old ledger and head, if any, are kept beside it.
    For an operator who has lost a ledger: the budget starts again from 0, visibly to any auditor."""
    path = Path(path)
    public_hex = keys.public_key_raw(signing_key).hex()
    lock_fd = _acquire_lock(path, timeout=0.0)
    try:
        try:
            head = read_head(path, public_hex)
        except LedgerError:
            head = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for old in (path, _head_path(path)):
            if old.exists():
                old.rename(old.with_name(f"{old.name}.lost-{stamp}"))
        _create_empty(path)
        ledger = Ledger(path, signing_key=signing_key, lock_fd=lock_fd, state=_State())
        return ledger._append(
            kind=EntryKind.RESTART,
            reservation=None,
            run_id=None,
            round=None,
            site_id=None,
            dp_enabled=False,
            noise_multiplier=0.0,
            sample_rate=0.0,
            steps=0,
            sampling=Sampling.POISSON.value,
            max_grad_norm=None,
            dataset_size=None,
            accountant=Accountant.RDP.value,
            epsilon_conversion=None,
            delta=0.0,
            epsilon_round=0.0,
            epsilon_total=0.0,
            budget_epsilon=0.0,
            budget_delta=0.0,
            update_sha256=head[1] if head else None,
            noise_source="none",
            new_event=None,
        )
    finally:
        _release_lock(lock_fd)


def _noise_source(value: str | None, *, dp_enabled: bool) -> str:
    source = value if value is not None else ("os-seeded" if dp_enabled else "none")
    if source not in NOISE_SOURCES or (source == "none") == dp_enabled:
        raise LedgerError(f"noise source {source!r} does not fit a round with dp_enabled={dp_enabled}.")
    return source


def _encode_epsilon(value: float) -> float | str:
    if math.isnan(value):
        raise LedgerError("refusing to record epsilon = NaN.")
    return "inf" if math.isinf(value) else float(value)


def _decode_epsilon(value: float | int | str) -> float:
    return float(value)


def _decoded(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: _decode_epsilon(v) if k in _EPSILON_FIELDS else v for k, v in entry.items()}


def _conversion(value: str | None) -> EpsilonConversion | None:
    return None if value is None else EpsilonConversion(value)


def _method(accountant: Accountant, conversion: EpsilonConversion | None) -> str:
    return accountant.value + (f"/{conversion.value}" if conversion else "")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else ("inf" if math.isinf(value) else f"{value:.4f}")
