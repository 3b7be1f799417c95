"""The site runtime: the process that holds the warm site (client/warm.py) and serves its SuperNode's tasks.

    python -m client.runtime.worker --site-config site.toml --runtime-api-address 127.0.0.1:9094 \
        --secret-file FILE (--coordinator-key KEY | --no-coordinator-key) [--wake-fds TASK_R,REPLY_W]

Started and watched by the node's supervisor (node.py), never by hand: it claims the SuperNode's tasks
one at a time with the secret the supervisor shares with the SuperNode, hands each to one
`SiteRuntime` (site_runtime.py) and keeps the base model, the scrubbed records and the tokenizer in
memory between them. When it dies mid-task (a crash, the OOM killer, SIGKILL), its ledger reservation
stays spent, the SuperNode answers that task with Flower's "ClientApp stopped responding" once its
heartbeats stop, and the supervisor starts a fresh runtime for the next task.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from client.runtime.flower_io import RuntimeLink, TaskInput, TaskSession
from client.runtime.site_runtime import SiteRuntime
from client.runtime.wake import Doorbell, parse_fds
from common.errors import SiloError

log = logging.getLogger("silo.site")
# Seconds between task polls: a round starts within POLL_S of the SuperNode receiving it while a run is
# under way (a task in the last BUSY_S seconds); an idle node polls every IDLE_POLL_S.
POLL_S = 0.05
IDLE_POLL_S = 0.5
BUSY_S = 120.0
# With the SuperNode's doorbell (wake.py) the runtime claims a task when rung, and asks on its own only
# this often (a lost ring delays a task by at most this long).
WAKE_FALLBACK_S = 1.0


@dataclass(frozen=True)
class Bells:
    """The runtime's ends of the wake pipes: `task` rings when a message is in, ring `reply` once a reply is handed over."""

    task: Doorbell
    reply: Doorbell


def pull_input(session: TaskSession, ready: queue.Queue[tuple[TaskSession, TaskInput]]) -> None:
    """In a thread of its own: a message the SuperNode abandoned half-received (its run stopped) never
    completes, and must not hold up the messages after it."""
    try:
        t0 = time.perf_counter()
        task = session.pull()
        log.debug("[silo] task %d: input pulled in %.2fs", session.claimed.task_id, time.perf_counter() - t0)
        ready.put((session, task))
    except Exception as err:  # noqa: BLE001 - a task that cannot be read fails alone; the node goes on
        log.error("[silo] task %d: could not read its input: %s", session.claimed.task_id, type(err).__name__)
        with contextlib.suppress(Exception):
            session.finish(None, ok=False, details=f"could not read the task's input: {type(err).__name__}")
        session.close()


def serve_task(runtime: SiteRuntime, session: TaskSession, task: TaskInput, reply_bell: Doorbell | None = None) -> None:
    """Let the runtime handle one task, push the reply (ring `reply_bell`) and the task's outcome."""
    try:
        session.bind(task)
        t0 = time.perf_counter()
        outcome = runtime.handle(task)
        t1 = time.perf_counter()
        try:
            session.reply(outcome.reply, outcome.context)
            if reply_bell is not None:
                reply_bell.ring()
        finally:
            session.finish(outcome.context, ok=outcome.ok, details=outcome.details)
            runtime.after_reply()
        kind = task.message.metadata.message_type
        log.info(
            "[silo] %s message: handled in %.2fs, reply handed to the SuperNode in %.2fs",
            kind,
            t1 - t0,
            time.perf_counter() - t1,
        )
    except Exception as err:  # noqa: BLE001 - the SuperNode dropped the task (expired, run stopped): the node goes on
        log.error("[silo] task %d: lost mid-task: %s", session.claimed.task_id, type(err).__name__)
    finally:
        session.close()


def serve(
    runtime: SiteRuntime,
    link: RuntimeLink,
    stop: threading.Event,
    *,
    one_task: bool = False,
    bells: Bells | None = None,
) -> None:
    """Claim tasks and pull their inputs side by side; handle them one at a time, until `stop` is set.
    `one_task`: claim one, serve it and return (`[site] warm_runtime = false`: a fresh process per
    message, as Flower's own `flwr-clientapp` runs, for comparison). With `bells`, ask the SuperNode for
    a task when it rings (and every WAKE_FALLBACK_S), not every POLL_S."""
    ready: queue.Queue[tuple[TaskSession, TaskInput]] = queue.Queue()
    claimed_one = False
    last_task = last_ask = float("-inf")
    claimed = None
    while not stop.is_set():
        # Ask again at once after a claim: several messages may have come in on one ring.
        ask = bells is None or claimed is not None or bells.task.rung()
        ask = ask or time.monotonic() - last_ask >= WAKE_FALLBACK_S
        claimed = None
        try:
            if ask and not (one_task and claimed_one):
                last_ask = time.monotonic()
                claimed = link.acquire()
        except httpx.HTTPError as err:
            log.debug("[silo] Runtime API not reachable yet: %s", err)
        if claimed is not None:
            claimed_one = True
            last_task = time.monotonic()
            session = link.session(claimed)
            threading.Thread(
                target=pull_input, args=(session, ready), name=f"pull-{claimed.task_id}", daemon=True
            ).start()
        try:
            busy = time.monotonic() - last_task < BUSY_S
            session, task = ready.get(timeout=POLL_S if busy else IDLE_POLL_S)
        except queue.Empty:
            continue
        serve_task(runtime, session, task, bells.reply if bells is not None else None)
        if one_task:
            return


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM or SIGINT: set `stop` and leave. A second signal while the process shuts down (the supervisor
    and the process group may both send one) is ignored: raised inside an exit handler, it would only print
    a traceback into the site's log."""

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client.runtime.worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--site-config", type=Path, required=True)
    p.add_argument("--runtime-api-address", required=True)
    p.add_argument("--secret-file", type=Path, required=True, help="the task-claim secret (0600, the supervisor's)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--coordinator-key", type=Path)
    key.add_argument("--no-coordinator-key", action="store_true")
    p.add_argument(
        "--wake-fds", type=parse_fds, help="TASK_R,REPLY_W: the wake pipes' ends (wake.py; the supervisor's)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from client.runtime.node import setup_logging

    setup_logging()
    args = parser().parse_args(argv)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        runtime = SiteRuntime(args.site_config, None if args.no_coordinator_key else args.coordinator_key)
        link = RuntimeLink(
            args.runtime_api_address, args.secret_file.read_bytes(), prompt_pulls=runtime.cfg.site.warm_runtime
        )
    except SiloError as err:
        print(f"silo: error: {err}", file=sys.stderr)
        return err.exit_code
    try:
        bells = Bells(Doorbell(args.wake_fds[0]), Doorbell(args.wake_fds[1])) if args.wake_fds else None
        serve(runtime, link, stop, one_task=not runtime.cfg.site.warm_runtime, bells=bells)
    finally:
        with contextlib.suppress(Exception):
            link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
