"""Message exchange with the sites: wait for them, push a round's messages, collect the replies as they
arrive, and ask again the sites that were merely unreachable.

Flower's `Grid.send_and_receive` sleeps 3 s between pulls, so every exchange costs up to 3 s after
the last site has replied, several times a round (handshake, secure aggregation stages, training,
evaluation). `PromptGrid` wraps the run's Grid and pulls every `poll_s` instead (0.05 s by default,
`[federation] reply_poll_s`), with the same contract: the replies that arrived before `timeout`.
`on_reply` sees each reply as it arrives (the coordinator's live view). The ServerApp's object pulls
retry after 50 ms instead of backing off from 1 s (common/flower_pulls.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.adapter import numpy_to_state, state_to_arrays
from common.arrays import Arrays
from common.config import WireEncoding
from common.errors import FederationFailed, UpdateRejected
from common.flower_pulls import prompt_object_pulls
from common.manifest import Rejection
from common.reply import reply_parts
from common.transport import encode_global
from server.gate import NO_REPLY, NUM_EXAMPLES, RoundGate, collect_updates, example_count, finite_metrics
from server.round_record import RoundAnswers
from server.secagg import SecAggRound
from server.strategy import SiteUpdate, average_metrics

# Seconds between pulls when the federation names none.
POLL_S = 0.05
# A poll interval below this also shortens Flower's object-pull back-off (common/flower_pulls.py).
PROMPT_BELOW_S = 1.0


class PromptGrid:
    """A Grid whose `send_and_receive` returns as soon as every reply is in; everything else is the
    wrapped Grid's (`get_node_ids`, `push_messages`, `pull_messages`, `run`, ...)."""

    def __init__(
        self, grid: Grid, *, poll_s: float = POLL_S, on_reply: Callable[[Message], None] | None = None
    ) -> None:
        self.grid = grid
        self.poll_s = poll_s
        self.on_reply = on_reply
        if poll_s < PROMPT_BELOW_S:  # Flower's own 3 s polls (the old path, for comparison) keep its back-off
            prompt_object_pulls()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        if not hasattr(self.grid, "push_messages"):  # an in-process stand-in that answers directly
            answered = list(self.grid.send_and_receive(messages, timeout=timeout))
            for reply in answered:
                self._observe(reply)
            return answered
        pending = set(self.grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            pulled = 0
            for reply in self.grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
                self._observe(reply)
                pulled += 1
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            if pulled:  # pulling those took a while: the next site's reply may be in already
                continue
            time.sleep(self.poll_s if deadline is None else max(0.0, min(self.poll_s, deadline - time.monotonic())))
        return replies

    def _observe(self, reply: Message) -> None:
        if self.on_reply is not None:
            try:
                self.on_reply(reply)
            except Exception as err:  # noqa: BLE001 - a display must never end a round
                log(WARNING, "[silo] the reply observer failed: %s: %s", type(err).__name__, err)


# How often to look for connected SuperNodes while waiting for `min_sites` of them.
NODE_POLL_S = 1.0


def wait_for_sites(grid: Grid, *, minimum: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise FederationFailed(
                f"only {len(nodes)} site(s) connected after {timeout_s:.0f}s; `min_sites` is {minimum}"
            )
        time.sleep(NODE_POLL_S)


def global_record(arrays: Arrays, encoding: WireEncoding) -> ConfigRecord:
    """The global adapter as it goes down to the sites (common/transport.py)."""
    return state_to_arrays(numpy_to_state(encode_global(arrays, encoding)))


def round_messages(
    nodes: Iterable[int],
    arrays: Arrays,
    config: dict[str, Any],
    message_type: str,
    rnd: int,
    encoding: WireEncoding = WireEncoding.FP32,
) -> list[Message]:
    record = RecordDict({"arrays": global_record(arrays, encoding), "config": ConfigRecord(config)})
    return [Message(content=record, dst_node_id=n, message_type=message_type, group_id=str(rnd)) for n in nodes]


def reply_error(msg: Message) -> str:
    return msg.error.reason or f"error code {msg.error.code}"


def evaluate_round(
    grid: Grid,
    nodes: list[int],
    arrays: Arrays,
    rnd: int,
    timeout: float,
    encoding: WireEncoding = WireEncoding.FP32,
    run_id: str | None = None,
    answers: RoundAnswers | None = None,
) -> dict[str, Any]:
    """The sites' answers about the adapter of round `rnd`, averaged. A reply may also carry a site's
    answer about the round before (computed after its last train reply, client/answer_later.py): that
    one is filed in `answers`, never averaged in here."""
    # The run id names the run in the site's ledger entry for the answer (without it: "unknown").
    config: dict[str, Any] = {"server-round": rnd} if run_id is None else {"server-round": rnd, "run-id": run_id}
    messages = round_messages(nodes, arrays, config, MessageType.EVALUATE, rnd, encoding)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    per_site, failed = [], []
    for msg in replies:
        if msg.has_error():
            failed.append({"node_id": msg.metadata.src_node_id, "reason": reply_error(msg)})
            continue
        try:
            metrics = reply_parts(msg.content).metrics
            n = example_count(metrics, NUM_EXAMPLES)
            if n is None or n < 0:
                raise UpdateRejected(f"malformed reply: needs the metric `{NUM_EXAMPLES}` >= 0")
        except (UpdateRejected, KeyError, TypeError) as err:
            failed.append({"node_id": msg.metadata.src_node_id, "reason": str(err)})
            continue
        if answers is not None:
            answers.add(msg.metadata.src_node_id, metrics, default_round=rnd - 1, latest=rnd - 1)
        per_site.append((n, finite_metrics(RoundAnswers.without(metrics))))
    out: dict[str, Any] = average_metrics(per_site) if per_site else {}
    out["sites"] = len(per_site)
    if failed:
        out["failed"] = failed
    return out


# Flower's error for a SuperNode that is registered but not connected (restarting, backing off).
NODE_UNAVAILABLE = "Node Unavailable"
# Pause before asking unavailable sites again; their reconnect back-off is a few seconds to ~20 s.
RETRY_PAUSE_S = 3.0


def train_round_replies(
    grid: Grid,
    nodes: list[int],
    arrays: Arrays,
    config: dict[str, Any],
    rnd: int,
    gate: RoundGate,
    min_sites: int,
    timeout: float,
    encoding: WireEncoding = WireEncoding.FP32,
) -> tuple[list[SiteUpdate], list[Rejection]]:
    """Send the round to every site; while too few updates are in, ask the sites that were merely
    unreachable again (they trained nothing) until the round's timeout. Every site asked ends up
    accepted or rejected: one that never answered is rejected with `NO_REPLY`."""
    deadline = time.monotonic() + timeout
    accepted: list[SiteUpdate] = []
    outcome: dict[int, Rejection | None] = {}  # node -> its latest rejection, None once it replied usefully
    pending = list(nodes)
    while True:
        replies = list(
            grid.send_and_receive(
                round_messages(pending, arrays, config, MessageType.TRAIN, rnd, encoding),
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        )
        new, rejected = collect_updates(replies, gate)
        accepted += new
        outcome.update({u.node_id: None for u in new})
        outcome.update({r.node_id: r for r in rejected})
        for node in pending:
            outcome.setdefault(node, Rejection(node_id=node, reason=NO_REPLY))
        unavailable = [r for r in rejected if NODE_UNAVAILABLE in r.reason]
        if len(accepted) >= min_sites or not unavailable or time.monotonic() + RETRY_PAUSE_S > deadline:
            return accepted, [r for r in outcome.values() if r is not None]
        log(WARNING, "[silo] round %d: %d site(s) unreachable, asking again", rnd, len(unavailable))
        time.sleep(RETRY_PAUSE_S)
        pending = [r.node_id for r in unavailable] + [
            n for n in grid.get_node_ids() if n not in pending and n not in {u.node_id for u in accepted}
        ]


def secure_train_replies(
    grid: Grid, secagg: SecAggRound, arrays: Arrays, config: dict[str, Any], rnd: int, gate: RoundGate, timeout: float
) -> tuple[list[SiteUpdate], list[Rejection]]:
    """The train message to each site that shared keys, with the shares addressed to it; no second
    ask: a site that misses this message has dropped, and its masks are cancelled at unmasking."""
    sent = global_record(arrays, gate.encoding)
    messages = [
        Message(
            content=RecordDict({"arrays": sent, "config": ConfigRecord(config), "secagg": secagg.train_record(n)}),
            dst_node_id=n,
            message_type=MessageType.TRAIN,
            group_id=str(rnd),
        )
        for n in secagg.sharing
    ]
    accepted, rejected = collect_updates(grid.send_and_receive(messages, timeout=timeout), gate)
    answered = {u.node_id for u in accepted} | {r.node_id for r in rejected}
    return accepted, rejected + [Rejection(node_id=n, reason=NO_REPLY) for n in secagg.sharing if n not in answered]
