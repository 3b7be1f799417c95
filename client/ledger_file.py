"""The site ledger's bytes on disk: the exclusive lock a `Ledger` holds from open to close, the
fsync'd append of one line, and the new empty file (whose directory entry is fsync'd too).

The lock is an `flock` on `<ledger>.lock`, which names its holder (pid and since when) for the
message a second run gets; two runs at once cannot interleave their plans on one site's budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from common.errors import LedgerError

LOCK_POLL_SECONDS = 0.05
"""How often a waiting `Ledger.open` retries the lock."""


def append_line(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise LedgerError(f"{path}: short write ({written} of {len(line)} bytes); disk full?")
        os.fsync(fd)
    finally:
        os.close(fd)


def create_empty(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new file's directory entry survives a crash
    finally:
        os.close(dir_fd)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def acquire_lock(path: Path, *, timeout: float) -> int:
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise LedgerError(
                    f"ledger {path} is locked by another run ({holder}); waited {timeout:g} s. "
                    "Two runs may not train on one site's budget at once."
                ) from None
            time.sleep(LOCK_POLL_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}".encode(), 0)
    return fd


def release_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
