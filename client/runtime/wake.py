"""Wake-ups between a site's SuperNode and its runtime, so that neither polls the other over HTTP.

Two pipes, made by the node's supervisor (node.py) and handed down to both children:

- task: the SuperNode writes a byte when a message from the coordinator is in (flower_io.py hooks its
  loop); the runtime (worker.py) then claims the task at once. Before, the runtime asked the
  SuperNode's Runtime API for a task twenty times a second: each ask an HTTP request served by
  Python on the same cores as the other sites' training and Flower's messaging.
- reply: the runtime writes a byte when it has handed its reply to the SuperNode; the SuperNode then
  sends it on at once instead of at its next look (every 0.2 s).

A byte says only "look now". Nothing read from a pipe is trusted or even kept, and each side still
looks on its own now and then, so a lost byte delays a message, never loses it.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from dataclasses import dataclass

ENV = "SILO_WAKE_FDS"
"""The SuperNode's ends, `TASK_WRITE,REPLY_READ`, in its environment (the runtime gets `--wake-fds`)."""


class Doorbell:
    """One end of a wake pipe: `ring()` on the write end; `rung()` or `wait()` on the read end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False  # the read end saw end-of-file: no writer is left; plain sleeps from now on
        os.set_blocking(fd, False)

    def ring(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe (the other side has yet to look) or no reader left
            os.write(self.fd, b"\0")

    def rung(self) -> bool:
        """Whether the bell rang since the last look (every ring so far is taken)."""
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # BlockingIOError: nothing since the last look
            return False
        if not data:
            self.closed = True
        return bool(data)

    def wait(self, timeout: float) -> bool:
        """Block until the bell rings or `timeout` seconds pass; whether it rang."""
        if self.closed:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return bool(ready) and self.rung()


@dataclass(frozen=True)
class WakePipes:
    """Both pipes: the SuperNode writes `task_w` and reads `reply_r`; the runtime the other two ends."""

    task_r: int
    task_w: int
    reply_r: int
    reply_w: int

    @classmethod
    def create(cls) -> WakePipes:
        task_r, task_w = os.pipe()
        reply_r, reply_w = os.pipe()
        return cls(task_r, task_w, reply_r, reply_w)

    @property
    def supernode_fds(self) -> tuple[int, int]:
        return self.task_w, self.reply_r

    @property
    def runtime_fds(self) -> tuple[int, int]:
        return self.task_r, self.reply_w


def format_fds(fds: tuple[int, int]) -> str:
    return f"{fds[0]},{fds[1]}"


def parse_fds(text: str) -> tuple[int, int]:
    """`"A,B"` as two file descriptors; anything else is a ValueError."""
    first, second = (int(part) for part in text.split(","))
    if first < 0 or second < 0:
        raise ValueError(text)
    return first, second
