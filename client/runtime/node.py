"""A site's node: its SuperNode (`flower-supernode --isolation process`), Silo's site runtime that serves
it, and a supervisor over both, for the node's life.

    python -m client.runtime --site-config site.toml --runtime-api-address 127.0.0.1:9094 \
        [--coordinator-key coordinator_signing.pub | --no-coordinator-key] -- flower-supernode ...

The supervisor (this module) checks the site's configuration once, starts the SuperNode command
given after `--` and then the site runtime (worker.py), which claims the SuperNode's tasks one at a
time and keeps the site warm between them (client/warm.py). It shares a fresh task-claim secret with
both (0600, in a private directory), and two wake pipes (wake.py): the SuperNode rings the runtime
when a message is in, the runtime rings the SuperNode when its reply is, so neither polls the other.
`flower-supernode` itself runs with its fixed waits shortened (flower_io.py, `supernode_command`).

- The SuperNode exits (Flower's SuperNode ends itself when a restarted SuperLink no longer knows its
  node, as one that keeps its state in memory does): a fresh SuperNode is started, which joins again;
  the runtime stays up and goes on with it. A SuperNode that keeps exiting right after start stops
  the node, with that SuperNode's exit code (`MAX_QUICK_DEATHS`).
- The runtime dies (a crash, the OOM killer, SIGKILL): the task it was serving fails at the
  coordinator ("ClientApp stopped responding", once its heartbeats stop); its ledger reservation
  stays spent; a fresh runtime is started for the next task. A runtime that keeps dying right
  after start stops the node instead (`MAX_QUICK_DEATHS`).
- The supervisor dies, even by SIGKILL: the kernel stops both children (PR_SET_PDEATHSIG).

`silo site start` and the local federation (silo/local_federation.py) start exactly this.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from client.runtime.flower_io import SECRET_FLAG, supernode_command
from client.runtime.site_runtime import SiteRuntime
from client.runtime.wake import ENV as WAKE_ENV
from client.runtime.wake import WakePipes, format_fds
from common.errors import SiloError

log = logging.getLogger("silo.site")
# Linux prctl option: signal the child when its parent dies.
PR_SET_PDEATHSIG = 1
# Bytes of the secret shared by the site runtime and its SuperNode for claiming tasks.
SECRET_BYTES = 32
# A runtime that dies within QUICK_DEATH_S of starting, MAX_QUICK_DEATHS times in a row, stops the node:
# something is wrong that a restart will not mend (the site's log says what).
QUICK_DEATH_S = 20.0
MAX_QUICK_DEATHS = 3
WATCH_S = 0.2


def _die_with_parent() -> None:
    """In a child, before exec: SIGTERM it when the supervisor dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
    key_args = ["--no-coordinator-key"] if args.no_coordinator_key else ["--coordinator-key", str(args.coordinator_key)]
    with tempfile.TemporaryDirectory(prefix="silo-node-") as private:  # 0700
        secret_file = Path(private) / "superexec.secret"
        write_secret(secret_file)
        command = [*supernode_command(args.supernode), SECRET_FLAG, str(secret_file)]
        pipes = WakePipes.create()  # the SuperNode and the runtime wake each other (wake.py) instead of polling

        def start_supernode() -> subprocess.Popen[bytes]:
            return subprocess.Popen(  # noqa: S603 (the operator's command)
                command,
                preexec_fn=_die_with_parent,
                pass_fds=pipes.supernode_fds,
                env={**os.environ, WAKE_ENV: format_fds(pipes.supernode_fds)},
            )

        # Both pipes' ends stay open here: for each runtime and each SuperNode the supervisor starts.
        worker = [sys.executable, "-m", "client.runtime.worker", "--site-config", str(args.site_config)]
        worker += ["--runtime-api-address", args.runtime_api_address, "--secret-file", str(secret_file), *key_args]
        worker += ["--wake-fds", format_fds(pipes.runtime_fds)]
        try:
            return Supervisor(start_supernode, worker, pass_fds=pipes.runtime_fds).run()
        finally:
            for fd in (*pipes.runtime_fds, *pipes.supernode_fds):
                os.close(fd)


class QuickDeaths:
    """Counts a child's deaths within QUICK_DEATH_S of its start, in a row: a restart will not mend
    one that keeps dying at once."""

    def __init__(self) -> None:
        self.count = 0

    def too_many(self, started: float) -> bool:
        self.count = self.count + 1 if time.monotonic() - started < QUICK_DEATH_S else 1
        return self.count >= MAX_QUICK_DEATHS


class Supervisor:
    """Keeps a SuperNode (`start_supernode()`) and one site runtime serving it until a signal stops the
    node, or one of them keeps dying right after start."""

    def __init__(
        self,
        start_supernode: Callable[[], subprocess.Popen[bytes]],
        worker_argv: list[str],
        *,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.start_supernode = start_supernode
        self.supernode = start_supernode()
        self.worker_argv = worker_argv
        self.pass_fds = pass_fds
        self.worker: subprocess.Popen[bytes] | None = None
        self.stop = threading.Event()

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.worker = subprocess.Popen(  # noqa: S603 (our own module)
            self.worker_argv, preexec_fn=_die_with_parent, pass_fds=self.pass_fds
        )
        return self.worker

    def run(self) -> int:
        def on_signal(signum: int, _frame: object) -> None:
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        worker_deaths, supernode_deaths, code = QuickDeaths(), QuickDeaths(), None
        supernode_started = time.monotonic()
        try:
            worker, started = self.start_worker(), time.monotonic()
            while not self.stop.is_set():
                supernode_status = self.supernode.poll()
                if supernode_status is not None:
                    if self.stop.is_set() or supernode_deaths.too_many(supernode_started):
                        break
                    log.warning(
                        "[silo] SuperNode exited with code %s; starting a fresh SuperNode, which joins again (Flower's "
                        "SuperNode ends itself when a restarted coordinator no longer knows its node)",
                        supernode_status,
                    )
                    self.supernode, supernode_started = self.start_supernode(), time.monotonic()
                    continue
                status = worker.poll()
                if status == 0 and not self.stop.is_set():  # served its one task (`warm_runtime = false`)
                    worker, started = self.start_worker(), time.monotonic()
                elif status is not None and not self.stop.is_set() and self.supernode.poll() is None:
                    if worker_deaths.too_many(started):
                        log.error(
                            "[silo] the site runtime died %d times right after starting; stopping the node",
                            worker_deaths.count,
                        )
                        code = status if status > 0 else 1
                        break
                    log.error(
                        "[silo] the site runtime died (exit %s): any round it was serving fails at the coordinator and "
                        "its ledger reservation stays spent; starting a fresh runtime",
                        status,
                    )
                    worker, started = self.start_worker(), time.monotonic()
                time.sleep(WATCH_S)
        finally:
            self._stop_children()
        status = self.supernode.wait()
        if self.stop.is_set():  # asked to stop: the SuperNode's status is the signal we passed on
            log.info("[silo] asked to stop: the SuperNode and the site runtime were stopped; the node stops")
        elif code is None:
            log.error(
                "[silo] SuperNode exited with code %s, %d times right after starting; the node stops",
                status,
                supernode_deaths.count,
            )
        if code is not None:
            return code
        return status if status >= 0 else 128 - status

    def _stop_children(self) -> None:
        for proc in (self.worker, self.supernode):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.worker, self.supernode):
            if proc is None:
                continue
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m client.runtime", description=__doc__.split("\n\n")[0])
    p.add_argument("--site-config", type=Path, required=True, help="the site TOML")
    p.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, 127.0.0.1:PORT")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--coordinator-key", type=Path, help="the coordinator's run-request public key (site kit)")
    key.add_argument("--no-coordinator-key", action="store_true", help="accept unsigned run requests (tests only)")
    p.add_argument("supernode", nargs=argparse.REMAINDER, help="-- then the flower-supernode command")
    return p


def setup_logging() -> None:
    """Silo's own lines only (Flower logs its own; httpx would log every poll of the Runtime API)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
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
