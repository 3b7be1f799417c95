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
kept only in this process's memory until it is sent. A runtime that dies in between loses the answer,
never the charge. The per-message path (`[site] warm_runtime = false`) and direct calls of the
handlers answer on receipt, as before: only a runtime that will run the job turns this on.

This module holds no torch object of its own, so the runtime's gate can import it before the app.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.reply import ANSWERED_ROUND

if TYPE_CHECKING:
    from client.privacy import EvalRelease

log = logging.getLogger("silo.site")


@dataclass(frozen=True)
class PendingAnswer:
    run_id: str
    answered_round: int
    release: EvalRelease

    def metrics(self) -> dict[str, Any]:
        """The answer as a reply carries it beside an update or another answer: `global_*` metrics, the
        hold-out size, and the round it is about."""
        out: dict[str, Any] = {f"global_{k}": v for k, v in self.release.metrics().items() if k != "num-examples"}
        out["holdout-examples"] = self.release.num_examples
        out[ANSWERED_ROUND] = self.answered_round
        return out


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

    def take(self, run_id: str) -> PendingAnswer | None:
        """The answer kept for this run (one for another run is dropped: its coordinator moved on)."""
        pending, self.pending = self.pending, None
        if pending is not None and pending.run_id != run_id:
            log.info(
                "[silo] dropped a hold-out answer of run %s (now run %s); its charge stays", pending.run_id, run_id
            )
            return None
        return pending


# The node's one queue (one runtime process per node; messages are handled one at a time).
LATER = AnswerLater()
