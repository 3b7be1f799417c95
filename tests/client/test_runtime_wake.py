"""The wake pipes between a site's SuperNode and its runtime (client/runtime/wake.py): a ring is seen once,
a wait ends at a ring, and the runtime asks the SuperNode for a task when rung instead of twenty times a second."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import ModuleType

import pytest

from client.runtime import flower_io, worker
from client.runtime.wake import Doorbell, WakePipes, format_fds, parse_fds


@pytest.fixture
def pipes():
    made = WakePipes.create()
    yield made
    for fd in (made.task_r, made.task_w, made.reply_r, made.reply_w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_a_ring_is_seen_once_however_often_it_rang(pipes):
    bell, reader = Doorbell(pipes.task_w), Doorbell(pipes.task_r)
    assert not reader.rung()
    bell.ring()
    bell.ring()
    assert reader.rung()
    assert not reader.rung()


def test_a_wait_ends_at_a_ring_and_otherwise_runs_its_time(pipes):
    bell, reader = Doorbell(pipes.reply_w), Doorbell(pipes.reply_r)
    t0 = time.monotonic()
    assert not reader.wait(0.05)
    assert time.monotonic() - t0 >= 0.05
    threading.Timer(0.1, bell.ring).start()
    t0 = time.monotonic()
    assert reader.wait(30.0)  # returns at the ring, long before the timeout
    assert time.monotonic() - t0 < 20.0


def test_a_bell_with_no_writer_left_falls_back_to_plain_sleeps(pipes):
    reader = Doorbell(pipes.task_r)
    os.close(pipes.task_w)
    assert not reader.rung() and reader.closed
    t0 = time.monotonic()
    assert not reader.wait(0.05)  # a sleep, not a spin on end-of-file
    assert time.monotonic() - t0 >= 0.05


def test_a_full_pipe_never_blocks_the_ringer(pipes):
    bell = Doorbell(pipes.task_w)
    for _ in range(100_000):  # far more than a pipe buffer holds
        bell.ring()


@pytest.mark.parametrize("text", ["", "3", "3,4,5", "a,b", "-1,4"])
def test_malformed_wake_fds_are_refused(text):
    with pytest.raises(ValueError):
        parse_fds(text)


def test_wake_fds_round_trip():
    assert parse_fds(format_fds((7, 9))) == (7, 9)


def test_the_supernode_rings_only_when_a_message_came_in(pipes):
    loop = ModuleType("start_client_internal")
    results = iter([None, 42, None])
    loop._pull_and_store_message = lambda **_: next(results)  # type: ignore[attr-defined]
    reader = Doorbell(pipes.task_r)
    flower_io._ring_on_message(loop, Doorbell(pipes.task_w))
    assert loop._pull_and_store_message() is None and not reader.rung()
    assert loop._pull_and_store_message() == 42 and reader.rung()
    assert loop._pull_and_store_message() is None and not reader.rung()


def test_the_supernodes_wait_for_a_reply_ends_when_the_runtime_rings(pipes):
    capped = flower_io._CappedSleeps(30.0, Doorbell(pipes.reply_r))
    Doorbell(pipes.reply_w).ring()
    t0 = time.monotonic()
    capped.sleep(0.5)  # Flower's wait for the reply: over at once, the reply is in
    assert time.monotonic() - t0 < 0.4


class _CountingLink:
    def __init__(self) -> None:
        self.asks = 0

    def acquire(self) -> None:
        self.asks += 1


def test_the_runtime_asks_for_a_task_when_rung_not_twenty_times_a_second(pipes):
    link = _CountingLink()
    stop = threading.Event()
    bells = worker.Bells(Doorbell(pipes.task_r), Doorbell(pipes.reply_w))
    thread = threading.Thread(target=worker.serve, args=(None, link, stop), kwargs={"bells": bells}, daemon=True)
    thread.start()
    time.sleep(2.0)
    quiet = link.asks
    # Unrung: one ask at start and one per WAKE_FALLBACK_S (1 s): at most 4 in 2 s even on a slow machine;
    # polling every POLL_S (0.05 s) asked ~40 times.
    assert 1 <= quiet <= 4
    Doorbell(pipes.task_w).ring()
    deadline = time.monotonic() + 0.9  # under the fallback interval: only the ring can explain a new ask
    while link.asks == quiet and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert link.asks > quiet
