"""Every use of Flower's internals by the site executor, in one place.

`flower-supernode --isolation process` starts no app process of its own: it queues one task per
message it receives and serves them on its Runtime API (HTTP, loopback). An executor claims a task
(`AcquireTask`, which hands back a token), pulls the task's input with that token (the message, the
run's context, the run and its app bundle, the FAB, as bytes), and pushes a reply and the task's
outcome. This is what `flower-superexec` + `flwr-clientapp` do (flwr/supercore/superexec/
run_superexec.py, flwr/supernode/runtime/run_clientapp.py), minus the two steps Silo must never
take: installing the FAB and importing its code.

Pinned to flwr 1.41.0 (tests/security/test_site_executor.py fails loudly on any other version or
when one of the internals below changes shape). Nothing here looks at what a message means.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from logging import DEBUG
from pathlib import Path
from types import ModuleType
from typing import Any

import flwr
import httpx
from flwr.app import Context, Message
from flwr.common.constant import ISOLATION_MODE_PROCESS, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore import log
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from client.runtime.wake import ENV as WAKE_ENV
from client.runtime.wake import Doorbell, parse_fds
from common.flower_pulls import prompt_object_pulls

FLWR_VERSION = "1.41.0"
"""The Flower release whose Runtime API this module speaks; any other is refused at start."""
# `flower-supernode --isolation process`: the SuperNode starts nothing, Silo's executor serves it.
ISOLATION = ISOLATION_MODE_PROCESS
# Seconds between task heartbeats; the SuperNode expires a claimed task after 30 s without one.
HEARTBEAT_INTERVAL_S = 10.0
# The Runtime API call a SuperNode started with `--superexec-auth-secret-file` accepts only when it
# carries an HMAC under that secret: only the holder of the secret can claim tasks (get their tokens).
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"
SECRET_FLAG = "--superexec-auth-secret-file"
# How the executor names itself to the SuperNode's version check.
COMPONENT = "silo-site-executor"
# A task's calls retry a dropped connection for this long, then the task fails and the node goes on.
# (Flower's own invoker retries forever and SIGINTs its process on a 401: right for a per-message
# process, fatal for a node that must outlive any one message.)
TASK_RETRY_S = 30.0


# The SuperNode's fixed waits (flwr/supernode/start_client_internal.py): 3 s after each empty pull
# from the SuperLink, 0.5 s between looks for the runtime's reply. Capped at this many seconds (the
# environment variable SILO_SUPERNODE_MAX_SLEEP_S sets another cap: 3 restores Flower's own waits).
SUPERNODE_MAX_SLEEP_S = 0.2
SUPERNODE_SLEEP_ENV = "SILO_SUPERNODE_MAX_SLEEP_S"
SUPERNODE = "flower-supernode"


def supernode_command(command: list[str]) -> list[str]:
    """The operator's `flower-supernode ...` run through `python -m client.runtime.supernode` (the same
    arguments, the same SuperNode, its fixed waits capped); any other command is left as it is."""
    if command and Path(command[0]).name == SUPERNODE:
        return [sys.executable, "-m", "client.runtime.supernode", *command[1:]]
    return list(command)


# For this long after a reply, the next message is due (the coordinator's next round or evaluation): the
# SuperNode pulls every SUPERNODE_DUE_SLEEP_S, so that the slowest site, which the round waits for, starts
# the next one within that; the other sites waiting on it pull at the cap again once the window has passed.
SUPERNODE_DUE_S = 2.0
SUPERNODE_DUE_SLEEP_S = 0.05
# After this long without a message, an idle SuperNode pulls every SUPERNODE_IDLE_SLEEP_S instead.
SUPERNODE_BUSY_S = 120.0
SUPERNODE_IDLE_SLEEP_S = 1.0
# Flower's loop sleeps this long after a pull that found no message (start_client_internal.py).
_FLOWER_IDLE_SLEEP_S = 3


class _CappedSleeps(ModuleType):
    """`time` as the SuperNode's loop sees it: every sleep at most `cap` seconds while a run is under way;
    for `SUPERNODE_DUE_S` after a reply, at most `SUPERNODE_DUE_SLEEP_S` (the next message is due); after
    `SUPERNODE_BUSY_S` of empty pulls, at most `SUPERNODE_IDLE_SLEEP_S` (an idle node polls less).
    With a `reply` doorbell (wake.py), a wait for the runtime's reply ends as soon as the runtime rings."""

    def __init__(self, cap: float, reply: Doorbell | None = None) -> None:
        super().__init__("time")
        self.cap = cap
        self.reply = reply
        self.idle_since: float | None = None
        self.replied_at = float("-inf")  # the end of the last wait for a reply

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        now = time.monotonic()
        if seconds != _FLOWER_IDLE_SLEEP_S:  # a wait while a message is being handled: the node is busy
            self.idle_since = None
            if self.reply is not None:
                self.reply.wait(min(seconds, self.cap))
            else:
                time.sleep(min(seconds, self.cap))
            self.replied_at = time.monotonic()
            return
        self.idle_since = now if self.idle_since is None else self.idle_since
        idle = now - self.idle_since > SUPERNODE_BUSY_S
        limit = max(self.cap, SUPERNODE_IDLE_SLEEP_S) if idle else self.cap
        if self.cap < _FLOWER_IDLE_SLEEP_S and now - self.replied_at < SUPERNODE_DUE_S:  # the next message is due
            limit = min(limit, SUPERNODE_DUE_SLEEP_S)
        time.sleep(min(seconds, limit))


def run_supernode(argv: list[str]) -> int:
    """`flower-supernode` with its polling waits capped: a round's message is picked up within 0.2 s
    of reaching the SuperLink (0.05 s while it is due, after a reply), not up to 3 s later. Only the
    SuperNode's loop module is touched."""
    check_flower_version()
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    cap = float(os.environ.get(SUPERNODE_SLEEP_ENV, SUPERNODE_MAX_SLEEP_S))
    reply = None
    if cap < _FLOWER_IDLE_SLEEP_S:  # Flower's own waits asked for (the old path) keep its back-off and polls
        prompt_object_pulls()
        if wake := os.environ.get(WAKE_ENV):
            task_w, reply_r = parse_fds(wake)
            reply = Doorbell(reply_r)
            _ring_on_message(start_client_internal, Doorbell(task_w))
    start_client_internal.time = _CappedSleeps(cap, reply)  # type: ignore[attr-defined]
    sys.argv = [SUPERNODE, *argv]
    flower_supernode()
    return 0


def _ring_on_message(loop: ModuleType, task: Doorbell) -> None:
    """Ring `task` each time the SuperNode's loop has a message in (its objects pulled, the task it
    serves created), so the runtime claims it at once instead of polling for it."""
    pull = loop._pull_and_store_message

    def pull_and_ring(*args: Any, **kwargs: Any) -> int | None:
        run_id: int | None = pull(*args, **kwargs)
        if run_id is not None:
            task.ring()
        return run_id

    loop._pull_and_store_message = pull_and_ring  # type: ignore[attr-defined]


def check_flower_version() -> None:
    if flwr.__version__ != FLWR_VERSION:
        raise RuntimeError(
            f"Silo's site executor speaks the Runtime API of flwr {FLWR_VERSION}, but flwr {flwr.__version__} "
            "is installed; install the pinned version (`make setup`)"
        )


@dataclass(frozen=True)
class Claimed:
    """A task the executor holds: `token` authenticates every call about it."""

    token: str
    task_id: int
    run_id: int


@dataclass
class TaskInput:
    """What the SuperNode hands over for one message. `fab_content` is the app bundle's bytes: it is
    read (hashed, its manifest parsed) and never installed or imported."""

    message: Message
    context: Context
    run_id: int
    fab_hash: str
    fab_id: str
    fab_version: str
    fab_content: bytes


def _client(address: str, *interceptors: object, retry: bool) -> RuntimeHttpClient:
    invoker = RetryInvoker(
        lambda: exponential(max_delay=5), httpx.TransportError, max_tries=None, max_time=TASK_RETRY_S
    )
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # loopback only: the SuperNode's Runtime API binds 127.0.0.1
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name=COMPONENT), *interceptors],  # type: ignore[list-item]
        retry_invoker=invoker if retry else None,
    )


class RuntimeLink:
    """The executor's connection to its SuperNode's Runtime API; `secret` signs its task claims."""

    def __init__(self, address: str, secret: bytes, *, prompt_pulls: bool = True) -> None:
        check_flower_version()
        if prompt_pulls:
            prompt_object_pulls()
        self.address = address
        auth = SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_TASK_METHOD})
        self.client = _client(address, auth, retry=False)  # polled: a failed call is simply made again

    def acquire(self) -> Claimed | None:
        """Claim the oldest pending ClientApp task, if any."""
        res = self.client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if not res.HasField("task") or not res.token:
            return None
        return Claimed(token=res.token, task_id=res.task.task_id, run_id=res.task.run_id)

    def session(self, claimed: Claimed) -> TaskSession:
        return TaskSession(self.address, claimed)

    def close(self) -> None:
        self.client.close()


class TaskSession:
    """One claimed task: pull its input, push one reply, finish it, `close()`. Heartbeats keep the
    claim alive from creation to `close()`."""

    def __init__(self, address: str, claimed: Claimed) -> None:
        self.claimed = claimed
        self.client = _client(address, RuntimeTokenHttpInterceptor(claimed.token), retry=True)
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"heartbeat-{claimed.task_id}", daemon=True)
        self._heartbeat.start()

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=HEARTBEAT_INTERVAL_S)
        self.client.close()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
            except httpx.HTTPError as err:
                log(DEBUG, "[silo] task %d heartbeat failed: %s", self.claimed.task_id, err)

    def pull(self) -> TaskInput:
        """The task's input. Blocks while the message's objects are still arriving at the SuperNode (a
        message it abandoned never completes: pull in a thread of its own, see node.py)."""
        message, context, run, fab = pull_task_input(self.client)
        return TaskInput(message, context, run.run_id, run.fab_hash, run.fab_id, run.fab_version, fab.content)

    def bind(self, task: TaskInput) -> None:
        """Make `task` the process's current task (Flower reads it when building messages): inputs of
        several tasks may be pulled at once, one task is handled at a time."""
        TaskIdentity.task_id, TaskIdentity.run_id = self.claimed.task_id, task.run_id
        TaskIdentity.node_id = task.context.node_id

    def reply(self, reply: Message, context: Context) -> None:
        push_message(self.client, reply, context)

    def finish(self, context: Context | None, *, ok: bool, details: str = "") -> None:
        push_task_output(self.client, context, SubStatus.COMPLETED if ok else SubStatus.FAILED, details)
