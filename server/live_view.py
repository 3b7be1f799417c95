"""The coordinator's live view: each site's state and its ε spent against its budget, as replies arrive.

The ServerApp runs under the SuperLink, away from the operator's terminal, so it publishes what it
sees in `<run-dir>/live.json` (atomically, at most every `WRITE_EVERY_S`), and `silo federation run`
shows it (silo/live_screen.py). `LiveGrid` wraps the run's Grid and records, per node:

    connected     the node is among the Grid's connected nodes
    asked         a message was sent to it (`asked` names which: handshake, train round n, ...)
    replied       it answered (with a train reply: its declared ε total and budget)
    rejected      it answered with an error (the error's reason)

Besides each site's latest state, live.json keeps the last `MAX_EVENTS` changes, numbered, so a
screen that polls slower than replies arrive still shows every one. Only what the sites declare in their replies is shown (ε from the privacy declaration that the gate
checks); the manifest stays the record. Nothing here can end a round: a failure to write is logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from common.files import write_atomic
from server.grid_wrapper import GridWrapper

LIVE_FILE = "live.json"
# Seconds between writes of live.json while replies stream in (the last state is always written).
WRITE_EVERY_S = 0.5
# Changes kept in live.json: a screen polling every few seconds misses none of a round's (4 per site).
MAX_EVENTS = 1000


@dataclass
class SiteState:
    node_id: int
    site_id: str | None = None
    state: str = "connected"
    asked: str | None = None
    detail: str | None = None
    epsilon_total: float | None = None
    budget_epsilon: float | None = None
    at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%H:%M:%S"))


def _describe(message_type: str, group_id: str) -> str:
    kind = message_type.removeprefix("query.").removeprefix("silo_")
    return f"{kind} round {group_id}" if group_id not in ("", "0") else kind


class LiveStatus:
    """Per-node states of one run, written to `<run_dir>/live.json`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LIVE_FILE
        self.sites: dict[int, SiteState] = {}
        self.events: list[dict[str, Any]] = []  # every change, numbered: a screen polling slower sees them all
        self.seq = 0
        self.last_write = 0.0

    def site(self, node_id: int) -> SiteState:
        if node_id not in self.sites:
            self.sites[node_id] = SiteState(node_id)
            self._changed(self.sites[node_id])
        return self.sites[node_id]

    def _changed(self, s: SiteState) -> None:
        self.seq += 1
        self.events = [*self.events[-(MAX_EVENTS - 1) :], {"seq": self.seq, **asdict(s)}]

    def connected(self, node_ids: Iterable[int]) -> None:
        for n in node_ids:
            self.site(n)
        self.write()

    def asked(self, msg: Message) -> None:
        s = self.site(msg.metadata.dst_node_id)
        s.state, s.asked, s.detail = "asked", _describe(msg.metadata.message_type, msg.metadata.group_id), None
        s.at = datetime.now(UTC).strftime("%H:%M:%S")
        self._changed(s)

    def on_reply(self, msg: Message) -> None:
        s = self.site(msg.metadata.src_node_id)
        s.at = datetime.now(UTC).strftime("%H:%M:%S")
        if msg.has_error():
            s.state, s.detail = "rejected", msg.error.reason or f"error code {msg.error.code}"
        else:
            # ε only as this reply declares it: an evaluation answer spends too, but declares no total.
            s.state, s.detail, s.epsilon_total, s.budget_epsilon = "replied", None, None, None
            self._read_site_record(s, msg.content)
        self._changed(s)
        # Every reply is written at once (a few a round): throttled, the last replies of a run were never
        # written, and the operator's screen ended with a site still "asked".
        self.write(force=True)

    @staticmethod
    def _read_site_record(s: SiteState, content: RecordDict) -> None:
        record: Any = content.config_records.get("site")
        if record is None:
            return
        s.site_id = str(record.get("site-id", "")) or s.site_id
        try:
            privacy = json.loads(str(record.get("privacy", "")))
            s.epsilon_total, s.budget_epsilon = float(privacy["epsilon_total"]), float(privacy["budget_epsilon"])
        except (ValueError, KeyError, TypeError):
            return  # a reply without a privacy declaration (the handshake) or a malformed one: the gate says why

    def write(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < WRITE_EVERY_S:
            return
        self.last_write = now
        body = {
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "sites": [asdict(s) for s in self.sites.values()],
            "events": self.events,
        }
        try:
            write_atomic(self.path, json.dumps(body, allow_nan=False, default=str).encode())
        except (OSError, ValueError) as err:
            log(WARNING, "[silo] live view not written: %s", err)


class LiveGrid(GridWrapper):
    """The run's Grid, telling `status` which nodes are connected and what each was asked."""

    def __init__(self, grid: Grid, status: LiveStatus) -> None:
        super().__init__(grid)
        self.status = status

    def get_node_ids(self) -> Iterable[int]:
        nodes = list(self.grid.get_node_ids())
        self.status.connected(nodes)
        return nodes

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        out = list(messages)
        for msg in out:
            self.status.asked(msg)
        self.status.write(force=True)
        return self.grid.push_messages(out)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = list(messages)
        for msg in out:
            self.status.asked(msg)
        self.status.write(force=True)
        return self.grid.send_and_receive(out, timeout=timeout)
