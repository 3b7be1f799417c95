"""What `silo federation run` shows while a run goes: each site's state as it changes, from the
ServerApp's `<run-dir>/live.json` (server/live_view.py), one line per change:

    [  12.3s] waiting for sites: none connected yet
    [  14.0s] node 4412 (site ?): connected
    [  15.1s] hospital-a (node 4412): asked: handshake
    [  15.9s] hospital-a (node 4412): replied to handshake
    [  16.0s] hospital-a (node 4412): asked: train round 1
    [  41.7s] hospital-a (node 4412): replied to train round 1; ε 5.77 of 10.00 spent, 4.23 left
    [  44.2s] bank-c (node 9120): rejected (train round 1): BudgetExhausted: ...

Lines, not a redrawn table: they read the same in a terminal, a log file and `tmux capture-pane`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LIVE_FILE = "live.json"  # server.live_view.LIVE_FILE: the silo command reads it without importing the server


class LiveScreen:
    """Call it every poll; prints what changed since the last call to `out`."""

    def __init__(self, run_dir: Path, out: Any, t0: float | None = None) -> None:
        self.path = Path(run_dir) / LIVE_FILE
        self.out = out
        self.t0 = time.monotonic() if t0 is None else t0
        self.seen = 0  # the number of the last change shown
        self.waiting_said = False
        self.stale_before = time.time()  # a live.json left by an earlier submission is not this run's

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=self.out, flush=True)

    def __call__(self) -> None:
        try:
            if self.path.stat().st_mtime < self.stale_before:
                raise FileNotFoundError
            live = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            if not self.waiting_said:
                self.waiting_said = True
                self._say("waiting for the ServerApp and for sites to connect")
            return
        for event in live.get("events", []):
            if event["seq"] > self.seen:
                self.seen = event["seq"]
                self._say(site_line(event))


def site_line(site: dict[str, Any]) -> str:
    who = f"{site['site_id']} (node {site['node_id']})" if site.get("site_id") else f"node {site['node_id']} (site ?)"
    state, asked = site.get("state"), site.get("asked")
    if state == "asked":
        return f"{who}: asked: {asked}"
    if state == "rejected":
        return f"{who}: rejected ({asked}): {site.get('detail')}"
    if state == "replied":
        eps = ""
        total, budget = site.get("epsilon_total"), site.get("budget_epsilon")
        if isinstance(total, int | float) and isinstance(budget, int | float):
            eps = f"; ε {total:.2f} of {budget:.2f} spent, {budget - total:.2f} left"
        return f"{who}: replied to {asked}{eps}"
    return f"{who}: {state}"
