"""The ledger's signed head, `<ledger>.head`: the entry count and the sha256 of the last line, signed
with the site's key and replaced atomically after every append.

A ledger that is missing while its head exists, shorter than its head, or whose entry at the head's
position is not the one the head signed was lost, truncated or replaced: planning from it would
restart the site's budget at ε = 0, so the site refuses it (`check_head`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import keys
from common.errors import LedgerError
from common.files import write_atomic
from common.ledger.entry import canonical

HEAD_FORMAT = 1

HEAD_MODE = 0o600
"""Only the site's account reads or replaces its head."""


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def write_head(path: Path, key: Ed25519PrivateKey, *, entries: int, last_sha256: str) -> None:
    """Sign the head of the ledger at `path` and replace `<ledger>.head` with it atomically."""
    head: dict[str, Any] = {
        "format": HEAD_FORMAT,
        "entries": entries,
        "last_sha256": last_sha256,
        "site_public_key": keys.public_key_raw(key).hex(),
    }
    head["signature"] = keys.sign(key, canonical(head)).hex()
    write_atomic(head_path(path), canonical(head) + b"\n", mode=HEAD_MODE)


def read_head(path: str | Path, public_hex: str) -> tuple[int, str] | None:
    """(entries, sha256 of the last line) the ledger's signed head records; None without a head.
    Raises `LedgerError` when the head is unreadable or not signed by the site's key."""
    target = head_path(Path(path))
    try:
        head = json.loads(target.read_bytes())
        unsigned = {k: v for k, v in head.items() if k != "signature"}
        signed = head["site_public_key"] == public_hex and keys.verify(
            keys.public_key_from_raw(bytes.fromhex(public_hex)), canonical(unsigned), bytes.fromhex(head["signature"])
        )
        entries, last = int(head["entries"]), str(head["last_sha256"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        signed = False
    if not signed:
        raise LedgerError(lost_ledger_message(Path(path), f"has a head ({target.name}) that is not the site's"))
    return entries, last


def check_head(path: Path, lines: list[bytes], public_hex: str) -> None:
    """Refuse a ledger (its `lines`) shorter than its signed head, or whose entry at the head is another."""
    head = read_head(path, public_hex)
    if head is None:
        return
    entries, last = head
    if len(lines) < entries:
        raise LedgerError(lost_ledger_message(path, f"has {len(lines)} entries but its signed head records {entries}"))
    if entries and hashlib.sha256(lines[entries - 1]).hexdigest() != last:
        raise LedgerError(lost_ledger_message(path, f"differs from its signed head at entry {entries - 1}"))


def lost_ledger_message(path: Path, what: str) -> str:
    return (
        f"privacy ledger {path} {what}: it was lost, truncated or replaced, and planning from it would "
        "restart this site's budget. Nothing trained. Restore the ledger from a backup; or, deliberately, "
        f"`silo ledger restart --ledger {path} --key <state_dir>/site_signing.key --confirm-budget-restart` "
        "starts a new ledger whose first entry records the restart."
    )
