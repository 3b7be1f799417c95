"""`silo ledger export`: what an auditor needs from a site's ledger, and nothing else."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from common import keys
from common.errors import LedgerError
from common.ledger.entry import LEDGER_FORMAT, encode_epsilon
from common.ledger.verify import embedded_public_key, verify_ledger
from common.version import CODE_VERSION


def export_ledger(path: str | Path, out: str | Path) -> Path:
    """Write what an auditor needs into directory `out`: the ledger bytes, the site's public key (PEM)
    and a manifest (fingerprint, entry count, file sha256, self-verification). No secrets, no records.

    The embedded key only proves self-consistency: the auditor must compare `site_public_key_fingerprint`
    with the fingerprint the site registered with the federation.
    """
    path, out = Path(path), Path(out)
    public_hex = embedded_public_key(path)
    if public_hex is None:
        raise LedgerError(f"{path}: ledger is empty; nothing to export.")
    public_key = keys.public_key_from_raw(bytes.fromhex(public_hex))
    out.mkdir(parents=True, exist_ok=True)
    ledger_out, key_out, manifest_out = (
        out / "ledger.jsonl",
        out / "site_public_key.pem",
        out / "manifest.json",
    )
    for target in (ledger_out, key_out, manifest_out):
        if target.exists():
            raise LedgerError(f"refusing to overwrite {target}.")
    shutil.copyfile(path, ledger_out)
    keys.save_public_key(public_key, key_out)
    result = verify_ledger(ledger_out, public_key)
    manifest = {
        "ledger_format": LEDGER_FORMAT,
        "ledger_file": ledger_out.name,
        "ledger_sha256": hashlib.sha256(ledger_out.read_bytes()).hexdigest(),
        "entries": result.entries,
        "site_public_key_file": key_out.name,
        "site_public_key_fingerprint": keys.fingerprint(public_key),
        "self_verification": {
            "ok": result.ok,
            "first_bad_index": result.first_bad_index,
            "reason": result.reason,
        },
        "epsilon_total": None if result.epsilon_total is None else encode_epsilon(result.epsilon_total),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "exported_by": CODE_VERSION,
    }
    manifest_out.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out
