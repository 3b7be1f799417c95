"""The site's state directory: the Ed25519 key that signs its ledger and seals its updates, and the
ledger itself (client/ledger.py), which starts with the key and is never silently restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client.ledger import Ledger
from common.config import SiteConfig
from common.keys import generate_signing_key, load_private_key, save_private_key, save_public_key
from common.pki import SiteKit, install_site_signing_key


def site_signing_key(cfg: SiteConfig) -> Any:
    """The site's Ed25519 key that signs its ledger (made on first use, 0600, beside the ledger).
    Auditors verify with `<state_dir>/site_signing.pub` or `silo ledger export`.

    A key made here starts the site's ledger with it; from then on a missing ledger is refused
    (client/ledger.py): losing the ledger must not restart the budget."""
    path = cfg.state_dir / "site_signing.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = generate_signing_key()
        save_private_key(key, path)
        save_public_key(key, path.with_suffix(".pub"))
        Ledger.open(ledger_path(cfg), signing_key=key, create=True).close()
    return load_private_key(path)


def install_kit_signing_key(kit: SiteKit, cfg: SiteConfig) -> None:
    """Install the signing key of the site's kit (`silo keys`) into its `state_dir`. A key that was not
    there yet starts the site's ledger; a key already there keeps its ledger, which must exist (a
    lost ledger is refused at the next round, never silently restarted)."""
    new = not (cfg.state_dir / kit.signing_key.name).exists()
    installed = install_site_signing_key(kit, cfg.state_dir)
    path = ledger_path(cfg)
    if new and not path.exists() and not path.with_name(path.name + ".head").exists():
        Ledger.open(path, signing_key=load_private_key(installed), create=True).close()


def ledger_path(cfg: SiteConfig) -> Path:
    return cfg.state_dir / "privacy_ledger.jsonl"


# Seconds to wait for the ledger lock held by another round or run at this site before refusing.
LEDGER_LOCK_TIMEOUT_S = 30.0
