"""The hold-out answer computed after the reply, in the wait for the next message (issue 15).

Every train message asks a site for a DP answer about its hold-out records for the adapter it carries.
Computed on receipt, that answer sits on the round's critical path: the slowest site evaluates, then
trains, and every other site waits for it. A site's long-lived runtime (client/runtime/site_runtime.py)
instead trains and replies first, then computes the answer while the coordinator aggregates and sends
the next round, and hands it over with its next reply (or, after the last round, with the final
evaluation's). The coordinator files each answer under the round whose adapter it is about
(`answered-round`, server/round_record.py).

Nothing about the privacy path changes: the answer is the same Gaussian release, charged to the
ledger (under its lock, with the next round's training required to fit too) before it is kept, and
kept until it is sent: in the runtime's memory, and in the site's state directory
(`pending_answer.json`, DP-released numbers only) for a runtime started after this one died. The
charge is never lost either way. The per-message path (`[site] warm_runtime = false`) and direct
calls of the handlers answer on receipt, as before: only a runtime that will run the job turns this on.

This module holds no torch object of its own, so the runtime's gate can import it before the app.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import write_atomic
from common.reply import ANSWERED_ROUND

if TYPE_CHECKING:
    from client.privacy import EvalRelease

log = logging.getLogger("silo.site")


PENDING_FILE = "pending_answer.json"
"""In the site's state directory: the answer charged and not yet sent, so that a runtime that dies before
its next reply loses nothing. It holds what the next reply would carry (DP-released numbers, the run and
the round), never a record or an exact statistic of one."""


@dataclass(frozen=True)
class PendingAnswer:
    run_id: str
    answered_round: int
    answer: dict[str, float]  # the release's metrics (`eval_loss`, `eval_loss_noise_std`, `accuracy`)
    holdout_examples: int

    @classmethod
    def of(cls, run_id: str, answered_round: int, release: EvalRelease) -> PendingAnswer:
        answer = {k: float(v) for k, v in release.metrics().items() if k != "num-examples"}  # type: ignore[arg-type]
        return cls(run_id, answered_round, answer, release.num_examples)

    def metrics(self) -> dict[str, Any]:
        """The answer as a reply carries it beside an update or another answer: `global_*` metrics, the
        hold-out size, and the round it is about."""
        out: dict[str, Any] = {f"global_{k}": v for k, v in self.answer.items()}
        out["holdout-examples"] = self.holdout_examples
        out[ANSWERED_ROUND] = self.answered_round
        return out

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), sort_keys=True).encode(), mode=0o600)

    @classmethod
    def load(cls, path: Path) -> PendingAnswer | None:
        """The answer a runtime kept on disk, or None (none kept, or a file that is not one: never sent)."""
        try:
            raw = json.loads(path.read_text())
            answer = {str(k): float(v) for k, v in raw["answer"].items()}
            pending = cls(str(raw["run_id"]), int(raw["answered_round"]), answer, int(raw["holdout_examples"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("[silo] %s is not a kept hold-out answer (%s): not sent", path, type(err).__name__)
            return None
        if not all(math.isfinite(v) for v in answer.values()):
            return None
        return pending


@dataclass
class AnswerLater:
    """The runtime's one queue of a single job: scheduled by a train handler, run by the runtime after
    the reply is handed over, its answer taken by the next handler of the same run."""

    enabled: bool = False  # set by a runtime that runs the jobs (site_runtime.py); off: answer on receipt
    job: Callable[[], PendingAnswer | None] | None = None
    pending: PendingAnswer | None = None
    waited_s: float = 0.0  # how long the message being handled waited for the last job to finish
    _thread: threading.Thread | None = field(default=None, repr=False)

    def schedule(self, job: Callable[[], PendingAnswer | None]) -> None:
        self.job = job

    def start(self) -> None:
        """Run the scheduled job, if any, in a thread of its own (the runtime goes on claiming tasks)."""
        job, self.job = self.job, None
        if job is None:
            return

        def run() -> None:
            self.pending = job()

        self._thread = threading.Thread(target=run, name="answer-later", daemon=True)
        self._thread.start()

    def finish(self) -> float:
        """Wait for a running job (before the next message touches the model); the seconds waited."""
        t0 = time.perf_counter()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.waited_s = time.perf_counter() - t0
        return self.waited_s

    def take(self, run_id: str, kept: Path) -> PendingAnswer | None:
        """The answer kept for this run, in memory or (a runtime started since) in the file `kept`, which is
        removed either way; one for another run is dropped: its coordinator moved on."""
        pending, self.pending = self.pending, None
        if pending is None:
            pending = PendingAnswer.load(kept)
        kept.unlink(missing_ok=True)
        if pending is not None and pending.run_id != run_id:
            log.info(
                "[silo] dropped a hold-out answer of run %s (now run %s); its charge stays", pending.run_id, run_id
            )
            return None
        return pending


# The node's one queue (one runtime process per node; messages are handled one at a time).
LATER = AnswerLater()
