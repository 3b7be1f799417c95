"""Message exchange with the sites: push a round's messages, collect the replies as they arrive.

Flower's `Grid.send_and_receive` sleeps 3 s between pulls, so every exchange costs up to 3 s after
the last site has replied, several times a round (handshake, secure aggregation stages, training,
evaluation). `PromptGrid` wraps the run's Grid and pulls every `poll_s` instead (0.2 s by default,
`[federation] reply_poll_s`), with the same contract: the replies that arrived before `timeout`.
`on_reply` sees each reply as it arrives (the coordinator's live view). The ServerApp's object pulls
retry after 50 ms instead of backing off from 1 s (common/flower_pulls.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import WARNING
from typing import Any

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.flower_pulls import prompt_object_pulls

# Seconds between pulls when the federation names none.
POLL_S = 0.2
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
            for reply in self.grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
                self._observe(reply)
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll_s if deadline is None else max(0.0, min(self.poll_s, deadline - time.monotonic())))
        return replies

    def _observe(self, reply: Message) -> None:
        if self.on_reply is not None:
            try:
                self.on_reply(reply)
            except Exception as err:  # noqa: BLE001 - a display must never end a round
                log(WARNING, "[silo] the reply observer failed: %s: %s", type(err).__name__, err)
