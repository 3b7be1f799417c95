"""A site's node: its SuperNode (`flower-supernode --isolation process`) and Silo's executor, one process
pair for the node's life.

    python -m client.runtime --site-config site.toml --runtime-api-address 127.0.0.1:9094 \\
        [--coordinator-key coordinator_signing.pub | --no-coordinator-key] -- flower-supernode ...

The executor loads the site's configuration once, starts the SuperNode command given after `--` as
its child, and then claims the SuperNode's tasks one at a time, each handled by one `SiteRuntime`
(site_runtime.py). The two live and die together: when the SuperNode exits, the executor exits with
its code; when the executor dies, even by SIGKILL, the kernel stops the SuperNode (PR_SET_PDEATHSIG).
`silo site start` and the local launcher (silo/launch.py) start exactly this.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx

from client.runtime.flower_io import SECRET_FLAG, RuntimeLink, TaskInput, TaskSession
from client.runtime.site_runtime import SiteRuntime
from common.errors import SiloError

log = logging.getLogger("silo.site")
# Seconds between task polls when idle: a round starts within this of the SuperNode receiving it.
POLL_S = 0.2
# Linux prctl option: signal the child when its parent dies.
PR_SET_PDEATHSIG = 1
# Bytes of the secret shared by the executor and its SuperNode for claiming tasks.
SECRET_BYTES = 32


def _die_with_parent() -> None:
    """In the SuperNode child, before exec: SIGTERM it when the executor dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pull_input(session: TaskSession, ready: queue.Queue[tuple[TaskSession, TaskInput]]) -> None:
    """In a thread of its own: a message the SuperNode abandoned half-received (its run stopped) never
    completes, and must not hold up the messages after it."""
    try:
        ready.put((session, session.pull()))
    except Exception as err:  # noqa: BLE001 - a task that cannot be read fails alone; the node goes on
        log.error("[silo] task %d: could not read its input: %s", session.claimed.task_id, type(err).__name__)
        with contextlib.suppress(Exception):
            session.finish(None, ok=False, details=f"could not read the task's input: {type(err).__name__}")
        session.close()


def serve_task(runtime: SiteRuntime, session: TaskSession, task: TaskInput) -> None:
    """Let the runtime handle one task, push the reply and the task's outcome."""
    try:
        session.bind(task)
        outcome = runtime.handle(task)
        try:
            session.reply(outcome.reply, outcome.context)
        finally:
            session.finish(outcome.context, ok=outcome.ok, details=outcome.details)
    except Exception as err:  # noqa: BLE001 - the SuperNode dropped the task (expired, run stopped): the node goes on
        log.error("[silo] task %d: lost mid-task: %s", session.claimed.task_id, type(err).__name__)
    finally:
        session.close()


def serve(runtime: SiteRuntime, link: RuntimeLink, stop: threading.Event) -> None:
    """Claim tasks and pull their inputs side by side; handle them one at a time, until `stop` is set."""
    ready: queue.Queue[tuple[TaskSession, TaskInput]] = queue.Queue()
    while not stop.is_set():
        try:
            claimed = link.acquire()
        except httpx.HTTPError as err:
            log.debug("[silo] Runtime API not reachable yet: %s", err)
            claimed = None
        if claimed is not None:
            session = link.session(claimed)
            threading.Thread(
                target=pull_input, args=(session, ready), name=f"pull-{claimed.task_id}", daemon=True
            ).start()
        try:
            session, task = ready.get(timeout=POLL_S)
        except queue.Empty:
            continue
        serve_task(runtime, session, task)


def write_secret(path: Path) -> bytes:
    """A fresh task-claim secret, 0600 from creation: another local user cannot claim this site's tasks."""
    secret = secrets.token_bytes(SECRET_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    return secret


def run_node(args: argparse.Namespace) -> int:
    runtime = SiteRuntime(args.site_config, None if args.no_coordinator_key else args.coordinator_key)
    log.info("[silo] %s", runtime.describe())
    if runtime.coordinator_key is None:
        log.warning("[silo] run requests are not verified: any run of the approved app may spend this site's budget")
    with tempfile.TemporaryDirectory(prefix="silo-node-") as private:  # 0700
        secret_file = Path(private) / "superexec.secret"
        secret = write_secret(secret_file)
        command = [*args.supernode, SECRET_FLAG, str(secret_file)]
        supernode = subprocess.Popen(command, preexec_fn=_die_with_parent)  # noqa: S603 (the operator's command)
        return _run(supernode, RuntimeLink(args.runtime_api_address, secret), runtime)


def _run(supernode: subprocess.Popen[bytes], link: RuntimeLink, runtime: SiteRuntime) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        supernode.send_signal(signum)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def watch() -> None:
        supernode.wait()
        stop.set()

    threading.Thread(target=watch, name="supernode-watch", daemon=True).start()
    try:
        serve(runtime, link, stop)
    finally:
        link.close()
        if supernode.poll() is None:
            supernode.terminate()
    code = supernode.wait()
    log.info("[silo] SuperNode exited with code %s; executor stops", code)
    return code if code >= 0 else 128 - code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client.runtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--site-config", type=Path, required=True, help="the site TOML")
    p.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, 127.0.0.1:PORT")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--coordinator-key", type=Path, help="the coordinator's run-request public key (site kit)")
    key.add_argument("--no-coordinator-key", action="store_true", help="accept unsigned run requests (tests only)")
    p.add_argument("supernode", nargs=argparse.REMAINDER, help="-- then the flower-supernode command")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Silo's own lines only (Flower logs its own; httpx would log every poll of the Runtime API).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    args = parser().parse_args(argv)
    if args.supernode[:1] == ["--"]:
        args.supernode = args.supernode[1:]
    if not args.supernode:
        print("silo: error: give the flower-supernode command after `--`", file=sys.stderr)
        return 2
    try:
        return run_node(args)
    except SiloError as err:
        print(f"silo: error: {err}", file=sys.stderr)
        return err.exit_code
