"""A federation's keys: a CA, the SuperLink's TLS certificate, and per site a SuperNode
authentication key and an Ed25519 signing key, in one directory layout.

    DIR/coordinator/ca.pem              CA certificate (every party trusts it)
    DIR/coordinator/ca.key              CA private key: only needed to issue a new SuperLink
                                        certificate; keep it offline once the federation runs
    DIR/coordinator/superlink.pem       SuperLink TLS certificate, SANs = the hosts given
    DIR/coordinator/superlink.key
    DIR/coordinator/registry.json       {"sites": {id: {"signing_public_key": PEM, "fingerprint": hex}}}
    DIR/coordinator/coordinator_signing.key  Ed25519 key that signs the coordinator's run requests
    DIR/coordinator/coordinator_signing.pub  (common/run_request.py); the ServerApp finds it beside
                                        the registry the federation TOML names
    DIR/coordinator/supernodes/<id>.pub each site's SuperNode public key, for `flwr supernode register`
    DIR/sites/<id>/ca.pem               the site's copy of the CA certificate
    DIR/sites/<id>/supernode_auth.key   SuperNode authentication key (ECDSA P-384, OpenSSH format,
    DIR/sites/<id>/supernode_auth.pub   as `flower-supernode --auth-supernode-private-key` reads it)
    DIR/sites/<id>/site_signing.key     Ed25519 key that signs the site's updates and ledger; belongs
    DIR/sites/<id>/site_signing.pub     in the site's `state_dir` (see `install_site_signing_key`)
    DIR/sites/<id>/coordinator_signing.pub  the coordinator's run-request key: the site trains only
                                        for runs it signed

`DIR/coordinator/` goes to the coordinator and `DIR/sites/<id>/` to site <id>; no site ever
receives another site's directory or the CA key. Private keys are written 0600 and nothing is
ever overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common import keys
from common.errors import ConfigError
from common.registry import load_registry

# The coordinator's run-request signing key (common/run_request.py), in coordinator/ and (public) in each kit.
COORDINATOR_SIGNING_KEY = "coordinator_signing.key"
COORDINATOR_SIGNING_PUB = "coordinator_signing.pub"


@dataclass(frozen=True)
class KeyLayout:
    """Paths of one key directory (see the module docstring)."""

    root: Path
    # Where coordinator/ was copied to, when it is not under `root` (a container mount, /etc/silo).
    coordinator_dir: Path | None = None

    @classmethod
    def for_coordinator(cls, path: str | Path) -> KeyLayout:
        """The layout of a key directory, or of its coordinator/ part alone wherever that was copied."""
        path = Path(path)
        if (path / "coordinator").is_dir():
            return cls(path)
        return cls(path.parent, coordinator_dir=path)

    @property
    def coordinator(self) -> Path:
        return self.coordinator_dir if self.coordinator_dir is not None else self.root / "coordinator"

    @property
    def ca_cert(self) -> Path:
        return self.coordinator / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.coordinator / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.coordinator / "superlink.pem"

    @property
    def superlink_key(self) -> Path:
        return self.coordinator / "superlink.key"

    @property
    def registry(self) -> Path:
        return self.coordinator / "registry.json"

    @property
    def coordinator_signing_key(self) -> Path:
        return self.coordinator / COORDINATOR_SIGNING_KEY

    @property
    def coordinator_signing_public_key(self) -> Path:
        return self.coordinator / COORDINATOR_SIGNING_PUB

    def supernode_public_key(self, site_id: str) -> Path:
        """The coordinator's copy of a site's SuperNode public key, to register with the SuperLink."""
        return self.coordinator / "supernodes" / f"{site_id}.pub"

    def check_coordinator(self) -> None:
        """The files `silo coordinator start` needs, its private keys owner-only (ca.key too, if here)."""
        for path in (self.ca_cert, self.superlink_cert, self.superlink_key):
            if not path.is_file():
                raise ConfigError(f"{path} is missing: give the coordinator/ directory made by `silo keys`")
        for key in (self.superlink_key, self.ca_key):
            keys.refuse_readable_by_others(key)
        self.supernode_public_keys()  # a private key among them is refused before anything starts

    def supernode_public_keys(self) -> list[Path]:
        """The SuperNode public keys to register (coordinator/supernodes/*.pub), none of them a private key."""
        pubs = sorted((self.coordinator / "supernodes").glob("*.pub"))
        for pub in pubs:
            try:
                data = pub.read_bytes()
            except OSError as err:
                raise ConfigError(f"cannot read SuperNode public key {pub}: {err.strerror}") from None
            keys.refuse_private_key_material(pub, data)
        return pubs

    def site(self, site_id: str) -> SiteKit:
        return SiteKit(self.root / "sites" / site_id)

    def site_ids(self) -> list[str]:
        return sorted(load_registry(self.registry).entries) if self.registry.exists() else []


@dataclass(frozen=True)
class SiteKit:
    """What one site receives: `DIR/sites/<id>/`."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def auth_key(self) -> Path:
        return self.root / "supernode_auth.key"

    @property
    def auth_public_key(self) -> Path:
        return self.root / "supernode_auth.pub"

    @property
    def signing_key(self) -> Path:
        return self.root / "site_signing.key"

    @property
    def signing_public_key(self) -> Path:
        return self.root / "site_signing.pub"

    @property
    def coordinator_public_key(self) -> Path:
        """The coordinator's run-request key; kits made before it existed lack it (`silo keys --add-coordinator-key`)."""
        return self.root / COORDINATOR_SIGNING_PUB

    def check(self) -> None:
        missing = [p.name for p in (self.ca_cert, self.auth_key, self.signing_key) if not p.is_file()]
        if missing:
            raise ConfigError(f"{self.root}: not a site key directory from `silo keys` (missing {', '.join(missing)})")
        for key in (self.auth_key, self.signing_key):
            keys.refuse_readable_by_others(key)


def install_site_signing_key(kit: SiteKit, state_dir: str | Path) -> Path:
    """Copy the kit's signing key into the site's `state_dir`, where the site looks for it.

    An identical key already there is fine; a different one is refused: the coordinator's registry
    holds the kit's key, so updates signed with the other would be rejected."""
    state_dir = Path(state_dir)
    target = state_dir / kit.signing_key.name
    wanted = keys.fingerprint(keys.load_private_key(kit.signing_key))
    if target.exists():
        have = keys.fingerprint(keys.load_private_key(target))
        if have != wanted:
            raise ConfigError(
                f"{target} holds a different signing key ({have[:12]}) than {kit.signing_key} ({wanted[:12]}), "
                "which the coordinator's registry lists; move the old key away (its ledger entries stay verifiable "
                "with its .pub) or register it instead"
            )
        return target
    state_dir.mkdir(parents=True, exist_ok=True)
    keys.write_new_file(target, kit.signing_key.read_bytes(), mode=keys.PRIVATE_KEY_MODE)
    pub = target.with_suffix(".pub")
    if not pub.exists():
        keys.write_new_file(pub, kit.signing_public_key.read_bytes(), mode=keys.PUBLIC_KEY_MODE)
    return target
