"""Shared by the attack tests: what is listening where, read from the kernel's own tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _listening_hosts(port: int) -> set[str]:
    """The local addresses (kernel hex: 0100007F is 127.0.0.1) with a TCP socket listening on `port`."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                hosts.add(address)
    return hosts


@pytest.fixture
def listening_hosts() -> Callable[[int], set[str]]:
    return _listening_hosts
