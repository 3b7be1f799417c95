"""The coordinator's reply collection (server/exchange.py `PromptGrid`): replies are taken as they arrive,
and a pull that brought replies is followed at once by another, not by a poll interval's sleep."""

from __future__ import annotations

from types import SimpleNamespace

from server import exchange
from server.exchange import PromptGrid


class _OneAtATime:
    """A grid whose replies are all in, but each pull hands over one (Flower pulls a reply's objects in turn)."""

    def __init__(self, n: int, *, late: int = 0) -> None:
        self.ids = [f"m{i}" for i in range(n)]
        self.late = late  # pulls that find nothing before the first reply is in
        self.pulls = 0

    def push_messages(self, messages: object) -> list[str]:
        return list(self.ids)

    def pull_messages(self, ids: set[str]) -> list[SimpleNamespace]:
        self.pulls += 1
        if self.pulls <= self.late or not ids:
            return []
        first = sorted(ids)[0]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=first))]


def test_replies_already_in_are_pulled_back_to_back(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(exchange.time, "sleep", slept.append)
    grid = _OneAtATime(3)
    replies = PromptGrid(grid, poll_s=0.2).send_and_receive([])  # type: ignore[arg-type]
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0", "m1", "m2"]
    assert slept == []  # the second and third replies were in: no poll interval spent waiting for them


def test_an_empty_pull_waits_one_poll_interval(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(exchange.time, "sleep", slept.append)
    grid = _OneAtATime(2, late=2)
    replies = PromptGrid(grid, poll_s=0.2).send_and_receive([])  # type: ignore[arg-type]
    assert len(replies) == 2
    assert slept == [0.2, 0.2]  # once per empty pull, never after a pull that brought a reply
