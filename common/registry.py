"""The site key registry (`registry.json`): the site signing keys a coordinator trusts.

    {"sites": {"<site_id>": {"signing_public_key": "<PEM>", "fingerprint": "<sha256 hex>"}}}

`silo keys` writes it (silo/keygen.py), the coordinator reads it (server/verify.py): one reader and one
writer here, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError
from common.files import write_atomic
from common.keys import fingerprint, load_public_key, public_key_pem


@dataclass(frozen=True)
class Registry:
    """The checked keys by site id, the file's sha256 (recorded in the manifest with each round) and
    its entries as written."""

    keys: dict[str, Ed25519PublicKey]
    sha256: str
    entries: dict[str, dict[str, str]] = field(default_factory=dict)


def registry_entry(key: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, str]:
    return {"signing_public_key": public_key_pem(key).decode(), "fingerprint": fingerprint(key)}


def registry_bytes(entries: Mapping[str, Mapping[str, str]]) -> bytes:
    """The file's bytes: sites sorted by id, indented, one trailing newline."""
    return (json.dumps({"sites": {k: dict(v) for k, v in sorted(entries.items())}}, indent=2) + "\n").encode()


def write_registry(path: str | Path, site_public_keys: Mapping[str, str | Path]) -> Path:
    """A registry file from `{site_id: path of its site_signing.pub}`."""
    path = Path(path)
    write_atomic(path, registry_bytes({s: registry_entry(load_public_key(p)) for s, p in site_public_keys.items()}))
    return path


def load_registry(path: str | Path) -> Registry:
    """Read and check the registry: every key parses, matches its fingerprint, and is used once."""
    path = Path(path)
    try:
        body = path.read_bytes()
        raw = json.loads(body)
    except OSError as err:
        raise ConfigError(f"cannot read site key registry {path}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: site key registry is not JSON: {err}") from None
    sites = raw.get("sites") if isinstance(raw, dict) else None
    if not isinstance(sites, dict):
        raise ConfigError(f'{path}: a site key registry needs a "sites" object, got {type(sites).__name__}.')
    keys: dict[str, Ed25519PublicKey] = {}
    for site_id, entry in sites.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("signing_public_key"), str):
            raise ConfigError(f'{path}: site {site_id!r} needs a "signing_public_key" PEM string.')
        try:
            key = serialization.load_pem_public_key(entry["signing_public_key"].encode())
        except ValueError as err:
            raise ConfigError(f"{path}: site {site_id!r}: not a PEM public key: {err}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: site {site_id!r}: expected an Ed25519 key, got {type(key).__name__}.")
        if entry.get("fingerprint") not in (None, fingerprint(key)):
            raise ConfigError(f"{path}: site {site_id!r}: fingerprint {entry['fingerprint']!r} does not match its key.")
        keys[str(site_id)] = key
    prints = [fingerprint(k) for k in keys.values()]
    if len(set(prints)) != len(prints):
        raise ConfigError(f"{path}: two sites share one signing key; each site needs its own.")
    return Registry(keys=keys, sha256=hashlib.sha256(body).hexdigest(), entries={str(k): v for k, v in sites.items()})
