"""The coordinator's live view (server/live_view.py) as `silo federation run` shows it (silo/live_screen.py):
each site's state and its declared ε as the replies arrive, one line per change."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from server.live_view import LiveStatus
from silo.live_screen import LiveScreen


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 7, 1


def _train(node: int) -> Message:
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN, group_id="1")


def _reply(msg: Message, *, epsilon: float) -> Message:
    privacy = json.dumps({"epsilon_total": epsilon, "budget_epsilon": 10.0})
    reply = Message(RecordDict({"site": ConfigRecord({"site-id": "hospital-a", "privacy": privacy})}), reply_to=msg)
    return reply


def _error(msg: Message, reason: str) -> Message:
    reply = Message(Error(code=1005, reason=reason), reply_to=msg)
    return reply


def test_live_view_shows_each_sites_state_and_epsilon_as_replies_arrive(tmp_path: Path) -> None:
    status, out = LiveStatus(tmp_path), io.StringIO()
    screen = LiveScreen(tmp_path, out, t0=0.0)
    screen.stale_before = 0.0
    status.connected([11, 12])
    asks = [_train(11), _train(12)]
    for msg in asks:
        status.asked(msg)
    status.write(force=True)
    screen()
    status.on_reply(_reply(asks[0], epsilon=5.77))
    status.on_reply(_error(asks[1], "BudgetExhausted: round 1 would spend 10.4 of 10.0"))
    status.write(force=True)
    screen()
    screen()  # nothing changed: nothing printed twice
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "node 11 (site ?): connected",
        "node 12 (site ?): connected",
        "node 11 (site ?): asked: train round 1",
        "node 12 (site ?): asked: train round 1",
        "hospital-a (node 11): replied to train round 1; ε 5.77 of 10.00 spent, 4.23 left",
        "node 12 (site ?): rejected (train round 1): BudgetExhausted: round 1 would spend 10.4 of 10.0",
    ]


def test_live_screen_says_it_is_waiting_before_the_serverapp_writes(tmp_path: Path) -> None:
    out = io.StringIO()
    screen = LiveScreen(tmp_path, out, t0=0.0)
    screen()
    screen()
    assert out.getvalue().count("waiting for the ServerApp and for sites to connect") == 1


def test_live_view_shows_every_change_even_between_two_looks(tmp_path: Path) -> None:
    """The next round is asked for right after the replies: a screen that looks every few seconds must
    still show each reply, not only the latest state."""
    status, out = LiveStatus(tmp_path), io.StringIO()
    screen = LiveScreen(tmp_path, out, t0=0.0)
    screen.stale_before = 0.0
    first = _train(11)
    status.asked(first)
    status.on_reply(_reply(first, epsilon=2.0))
    status.asked(Message(RecordDict(), dst_node_id=11, message_type=MessageType.TRAIN, group_id="2"))
    status.write(force=True)
    screen()
    status.on_reply(Message(RecordDict(), reply_to=_train(11)))  # a reply declaring no ε (an evaluation answer)
    status.write(force=True)
    screen()
    shown = out.getvalue()
    assert "replied to train round 1; ε 2.00 of 10.00 spent" in shown
    assert shown.rstrip().endswith("hospital-a (node 11): replied to train round 2")  # no stale ε
    assert shown.index("replied to train round 1") < shown.index("asked: train round 2")


def test_the_last_replies_of_a_run_reach_the_screen_without_another_write(tmp_path: Path) -> None:
    # Found capturing the operator's screens: the final evaluation's second reply came 0.1 s after the first,
    # inside the write throttle, and nothing was written after it: the screen ended with that site "asked".
    status, out = LiveStatus(tmp_path), io.StringIO()
    screen = LiveScreen(tmp_path, out, t0=0.0)
    screen.stale_before = 0.0
    asks = [_train(11), _train(12)]
    for msg in asks:
        status.asked(msg)
    status.on_reply(_reply(asks[0], epsilon=7.61))
    status.on_reply(_reply(asks[1], epsilon=7.61))  # no status.write(force=True) after this: the run ends here
    screen()
    shown = out.getvalue()
    assert "(node 11): replied to train round 1" in shown and "(node 12): replied to train round 1" in shown
