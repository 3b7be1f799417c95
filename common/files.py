"""Writing a file so that a crash leaves the old contents or the new, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODE = 0o644
"""Mode of a file written here unless the caller asks for less (the umask applies on top)."""


def write_atomic(path: str | Path, data: bytes, *, mode: int = DEFAULT_MODE) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
