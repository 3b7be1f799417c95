"""The site's privacy ledger writer: plans and records rounds in its signed, hash-chained JSONL file.

One concept: the site's open, locked ledger and the entries it appends (its four kinds below), each
after the checks that entry needs. The format, the signed head, a new entry's layout and the verifier
live in `common/ledger/` (the auditor reads the same code); what only the site does besides lives
beside this module: the budget arithmetic (`ledger_budget.py`), the lock and the bytes on disk
(`ledger_file.py`), the plan a reserved round carries to its record (`ledger_plan.py`).

- `plan_round` writes a `reserve` entry BEFORE training, once the budget check passed; it counts as
  spent from then on. `record_round` completes it after training, before the update leaves the site.
- `charge_evaluation` writes an `evaluation` entry before a DP evaluation answer is sent.
- `restart_ledger` writes a `restart` entry 0, when an operator deliberately starts a new ledger.

The head. After every append the ledger writes `<ledger>.head`: the entry count and the sha256 of the last
line, signed with the site's key. `Ledger.open` refuses a ledger that is missing while the site's key
exists, shorter than its head, or whose entry at the head's position is not the one the head signed:
a lost, truncated or replaced ledger would otherwise restart the budget at ε = 0. New ledgers are made
only deliberately: `create=True` when a site's key is made, or `silo ledger restart` (recorded).

A crash between plan and record leaves the reservation in place: it stays spent forever, so no later
run can overspend (fail closed; `silo budget` shows it as "reserved, never completed"). On top of that,
a `Ledger` holds an exclusive `flock` on `<ledger>.lock` from `open` to `close`, so two runs at once
cannot interleave their plans. Hold it across the whole round: open -> plan -> train -> record -> close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.ledger_budget import afford
from client.ledger_file import acquire_lock, append_line, create_empty, release_lock
from client.ledger_plan import RoundPlan, check_trained_within
from common import keys
from common.accounting import (
    Accountant,
    DPEvent,
    EpsilonConversion,
    SkellamEvent,
    compute_epsilon,
    default_conversion,
)
from common.distributed_dp import DistributedRound
from common.errors import ConfigError, LedgerError
from common.ledger.entry import (
    EVENT_FIELDS,
    PHASES,
    SHA256_HEX,
    BadEntry,
    EntryKind,
    Sampling,
    canonical,
    check_noise_source,
    conversion_of,
    decoded,
)
from common.ledger.head import check_head, head_path, lost_ledger_message, read_head, write_head
from common.ledger.new_entry import distributed_record, new_entry
from common.ledger.verify import ChainState, read_lines, walk
from common.schema import decode_epsilon


class Ledger:
    """An open, locked ledger. Use `Ledger.open(...)` as a context manager."""

    def __init__(self, path: Path, *, signing_key: Ed25519PrivateKey, lock_fd: int, state: ChainState) -> None:
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
        lock_fd = acquire_lock(path, timeout=lock_timeout)
        public_hex = keys.public_key_raw(signing_key).hex()
        try:
            if not path.exists():
                if not create or head_path(path).exists():
                    raise LedgerError(lost_ledger_message(path, "is missing"))
                create_empty(path)
            state = walk(read_lines(path), public_hex, check_epsilon=False)
            check_head(path, state.lines, public_hex)
        except BadEntry as err:
            release_lock(lock_fd)
            raise LedgerError(f"{path}: {err} Refusing to plan rounds on a ledger that fails verification.") from None
        except BaseException:
            release_lock(lock_fd)
            raise
        return cls(path, signing_key=signing_key, lock_fd=lock_fd, state=state)

    def close(self) -> None:
        if self._lock_fd is not None:
            release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -------------------------------------------------------------------------------

    def history(self) -> list[DPEvent | SkellamEvent]:
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
        return [decoded(e) for e in self._state.entries]

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
        also_fits: Iterable[DPEvent | SkellamEvent] = (),
        phase: str = "lora",
        distributed: DistributedRound | None = None,
    ) -> RoundPlan:
        """Check the budget and reserve the round, BEFORE any training.

        `conversion` defaults to Opacus 1.6's for `accountant`. With `dp_enabled=False` the round is
        recorded with noise 0 and ε = inf. `noise_source` defaults to "os-seeded" (DP) or "none"; the
        round entry must record the same. `also_fits`: events the caller will spend after this one in
        the same round (its evaluation release), which must fit the budget too. Raises
        `BudgetExhausted` (nothing written) when the composed total would exceed `budget_epsilon`;
        `ConfigError` when `delta > budget_delta`. `phase`: what the round trains (client.train.Phase).
        `distributed`: a distributed-noise round (one step, common/distributed_dp.py); it is charged on the
        figure its `budget_figure` names, and the entry records both figures.
        """
        self._check_open()
        noise_source = check_noise_source(noise_source, dp_enabled=dp_enabled)
        if phase not in PHASES:
            raise ConfigError(f"`phase` must be one of {PHASES}, got {phase!r}.")
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
        event: DPEvent | SkellamEvent = DPEvent(float(noise_multiplier), float(sample_rate), steps)
        record = None
        if distributed is not None:
            if not dp_enabled or steps != 1 or sample_rate != distributed.sample_rate:
                raise ConfigError(
                    f"a distributed round is one DP step at its own sample rate, got dp_enabled={dp_enabled}, "
                    f"steps={steps}, sample_rate={sample_rate} (planned {distributed.sample_rate})."
                )
            event = distributed.event(distributed.budget_figure)
            noise_multiplier = distributed.noise_multiplier
            record = distributed_record(distributed, self._state.entries, delta=delta)
        entry, before, after, epsilon_round = self._spend(
            EntryKind.RESERVE,
            event,
            also_fits,
            delta=delta,
            accountant=accountant,
            conversion=conversion,
            budget_epsilon=budget_epsilon,
            budget_delta=budget_delta,
            what=("this round", ", with its evaluation,"),
            nothing="trained",
            run_id=run_id,
            round=round,
            site_id=site_id,
            dp_enabled=dp_enabled,
            noise_multiplier=float(noise_multiplier),
            steps=steps,
            sampling=(Sampling.POISSON if poisson_sampling else Sampling.SHUFFLE).value,
            dataset_size=None,
            update_sha256=None,
            noise_source=noise_source,
            phase=phase,
            distributed=record,
        )
        return RoundPlan(
            reservation_index=entry["index"],
            reservation_sha256=self._state.last_sha256,
            noise_multiplier=float(noise_multiplier),
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
            distributed=record,
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
        noise_source = check_noise_source(noise_source, dp_enabled=plan.dp_enabled)
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
            check_trained_within(plan, list(accountant_history), index)
        if not SHA256_HEX.fullmatch(update_sha256):
            raise LedgerError(f"`update_sha256` must be 64 lowercase hex digits, got {update_sha256!r}.")
        for name, value in (("run_id", run_id), ("round", round), ("site_id", site_id)):
            if reserved[name] is not None and reserved[name] != value:
                raise LedgerError(
                    f"{self.path}: `{name}` {value!r} differs from reservation entry {index} ({reserved[name]!r})."
                )
        accountant = Accountant(reserved["accountant"])
        conversion = conversion_of(reserved["epsilon_conversion"])
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
            phase=reserved.get("phase"),
            distributed=reserved.get("distributed"),
            new_event=None,
            **{name: reserved[name] for name in EVENT_FIELDS if name != "epsilon_round"},
            epsilon_round=decode_epsilon(reserved["epsilon_round"]),
        )

    def require_budget(
        self, events: Iterable[DPEvent], *, delta: float, accountant: Accountant, budget_epsilon: float, what: str
    ) -> None:
        """Raise `BudgetExhausted` unless the recorded history composed with `events` fits the budget."""
        self._check_open()
        first, *rest = list[DPEvent | SkellamEvent](events)
        accountant = Accountant(accountant)
        afford(
            self._state.events,
            first,
            rest,
            delta=delta,
            accountant=accountant,
            conversion=default_conversion(accountant),
            budget_epsilon=budget_epsilon,
            what=what,
            nothing="evaluated, trained",
        )

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
        also_fits: Iterable[DPEvent | SkellamEvent] = (),
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
        if not SHA256_HEX.fullmatch(evaluated_sha256):
            raise LedgerError(f"`evaluated_sha256` must be 64 lowercase hex digits, got {evaluated_sha256!r}.")
        if not 0 < delta <= budget_delta < 1:
            raise ConfigError(f"`delta` must be in (0, budget_delta={budget_delta}], got {delta}.")
        entry, _, _, _ = self._spend(
            EntryKind.EVALUATION,
            event,
            also_fits,
            delta=delta,
            accountant=accountant,
            conversion=conversion,
            budget_epsilon=budget_epsilon,
            budget_delta=budget_delta,
            what=("this evaluation", " and the training after it"),
            nothing="evaluated",
            run_id=run_id,
            round=round,
            site_id=site_id,
            dp_enabled=dp_enabled,
            noise_multiplier=float(event.noise_multiplier),
            steps=1,
            sampling=Sampling.POISSON.value,  # q = 1: every hold-out record, no sampling to assume
            dataset_size=dataset_size,
            update_sha256=evaluated_sha256,
            noise_source=check_noise_source(noise_source, dp_enabled=dp_enabled),
        )
        return entry

    def _spend(
        self,
        kind: EntryKind,
        event: DPEvent | SkellamEvent,
        also_fits: Iterable[DPEvent | SkellamEvent],
        *,
        delta: float,
        accountant: Accountant,
        conversion: EpsilonConversion | None,
        budget_epsilon: float,
        budget_delta: float,
        what: tuple[str, str],
        nothing: str,
        **fields: Any,
    ) -> tuple[dict[str, Any], float, float, float]:
        """Append a `kind` entry that spends `event`, once `event` and then `also_fits` fit the budget
        (`BudgetExhausted`, nothing written, otherwise): (the entry, ε before, ε after, ε of `event`).
        `what`: the release, and what the refusal adds when `also_fits` is not empty."""
        also = list(also_fits)
        before, after, epsilon_round = afford(
            self._state.events,
            event,
            also,
            delta=delta,
            accountant=accountant,
            conversion=conversion,
            budget_epsilon=budget_epsilon,
            what=f"site {fields['site_id'] or '?'}: {what[0]}" + (what[1] if also else ""),
            nothing=nothing,
        )
        entry = self._append(
            kind=kind,
            reservation=None,
            sample_rate=float(event.sample_rate),
            max_grad_norm=None,
            accountant=accountant.value,
            epsilon_conversion=conversion.value if conversion else None,
            delta=float(delta),
            epsilon_round=epsilon_round,
            epsilon_total=after,
            budget_epsilon=budget_epsilon,
            budget_delta=float(budget_delta),
            new_event=event,
            **fields,
        )
        return entry, before, after, epsilon_round

    def _append(self, *, new_event: DPEvent | SkellamEvent | None, **fields: Any) -> dict[str, Any]:
        state = self._state
        entry = new_entry(
            self._key, self._public_hex, index=len(state.entries), prev_sha256=state.last_sha256, **fields
        )
        line = canonical(entry) + b"\n"
        append_line(self.path, line)
        state.add(entry, line[:-1], new_event)
        write_head(self.path, self._key, entries=len(state.entries), last_sha256=state.last_sha256)
        return dict(entry)

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise LedgerError(f"{self.path}: ledger is closed.")


def restart_ledger(path: str | Path, *, signing_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Start a new ledger at `path` whose entry 0 records a deliberate restart (and the lost ledger's
    last head, when its head file survives); the old ledger and head, if any, are kept beside it.
    For an operator who has lost a ledger: the budget starts again from 0, visibly to any auditor."""
    path = Path(path)
    public_hex = keys.public_key_raw(signing_key).hex()
    lock_fd = acquire_lock(path, timeout=0.0)
    try:
        try:
            head = read_head(path, public_hex)
        except LedgerError:
            head = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for old in (path, head_path(path)):
            if old.exists():
                old.rename(old.with_name(f"{old.name}.lost-{stamp}"))
        create_empty(path)
        ledger = Ledger(path, signing_key=signing_key, lock_fd=lock_fd, state=ChainState())
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
        release_lock(lock_fd)
