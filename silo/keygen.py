"""Making a federation's keys: what `silo keys` alone does (the layout is common/pki.py).

A CA, the SuperLink's TLS certificate, per site a SuperNode authentication key and an Ed25519
signing key, the coordinator's run-request key and the registry of the sites' public keys, written
into a new key directory or added to an existing one. Private keys are written 0600 and nothing
that exists is ever overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import keys
from common.errors import ConfigError
from common.files import write_atomic
from common.pki import KeyLayout
from common.registry import load_registry, registry_bytes, registry_entry

# Hosts in the SuperLink certificate when none are given: a federation on one machine. They are
# always added to hosts given, too: the coordinator reaches its own SuperLink over loopback (to
# register SuperNodes, to submit runs) and a loopback name proves nothing to a remote attacker.
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
# Certificate lifetime: long enough for a study, short enough that a lost key expires; renew with a new DIR.
DEFAULT_VALIDITY_DAYS = 825
# P-384: the curve Flower's SuperNode-authentication docs use; also used for the CA and TLS keys.
CURVE = ec.SECP384R1


# ---- key material -------------------------------------------------------------------------
def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE())


def make_ca(
    *, common_name: str = "Silo federation CA", days: int = DEFAULT_VALIDITY_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = generate_ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew between machines
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    *,
    days: int = DEFAULT_VALIDITY_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for `hosts` (IP addresses and DNS names), signed by the CA."""
    if not hosts:
        raise ConfigError("the SuperLink certificate needs at least one host name or IP address")
    key = generate_ec_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,  # type: ignore[arg-type]
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def openssh_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def openssh_public_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"


def pem_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_certificate(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(path: str | Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable PEM certificate: {err}") from None


# ---- the directory -----------------------------------------------------------------------
def create_keys(
    out: str | Path, sites: Iterable[str], *, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = DEFAULT_VALIDITY_DAYS
) -> KeyLayout:
    """Write a new federation's keys under `out`; refuses when `out` already holds any of them."""
    layout = KeyLayout(Path(out))
    site_ids = _check_site_ids(sites)
    if layout.coordinator.exists() and any(layout.coordinator.iterdir()):
        raise ConfigError(
            f"refusing to overwrite existing keys in {layout.coordinator}; use a new --out, or --add-sites"
        )
    for site_id in site_ids:
        _refuse_existing_site(layout, site_id)
    layout.coordinator.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = make_ca(days=days)
    all_hosts = list(dict.fromkeys([*hosts, *DEFAULT_HOSTS]))
    tls_key, tls_cert = issue_server_certificate(ca_key, ca_cert, all_hosts, days=days)
    _write_new(layout.ca_key, pem_private_key(ca_key), private=True)
    _write_new(layout.ca_cert, pem_certificate(ca_cert), private=False)
    _write_new(layout.superlink_key, pem_private_key(tls_key), private=True)
    _write_new(layout.superlink_cert, pem_certificate(tls_cert), private=False)
    _write_new(layout.registry, registry_bytes({}), private=False)
    add_coordinator_key(layout.root)
    add_sites(layout.root, site_ids)
    return layout


def add_sites(out: str | Path, sites: Iterable[str]) -> KeyLayout:
    """Make keys for new sites in an existing key directory and add them to its registry."""
    layout = KeyLayout(Path(out))
    site_ids = _check_site_ids(sites)
    if not layout.ca_cert.is_file() or not layout.registry.is_file():
        raise ConfigError(
            f"{layout.root}: no CA or registry; create the federation's keys first (silo keys --out DIR --sites ...)"
        )
    registry = load_registry(layout.registry).entries
    for site_id in site_ids:
        if site_id in registry:
            raise ConfigError(f"site {site_id!r} is already in {layout.registry}; refusing to replace its keys")
        _refuse_existing_site(layout, site_id)
    (layout.coordinator / "supernodes").mkdir(exist_ok=True, mode=0o700)
    ca_pem = layout.ca_cert.read_bytes()
    for site_id in site_ids:
        kit = layout.site(site_id)
        kit.root.mkdir(parents=True, mode=0o700)
        auth = generate_ec_key()
        _write_new(kit.ca_cert, ca_pem, private=False)
        _write_new(kit.auth_key, openssh_private_key(auth), private=True)
        _write_new(kit.auth_public_key, openssh_public_key(auth), private=False)
        _write_new(layout.supernode_public_key(site_id), openssh_public_key(auth), private=False)
        signing = keys.generate_signing_key()
        keys.save_private_key(signing, kit.signing_key)
        keys.save_public_key(signing, kit.signing_public_key)
        if layout.coordinator_signing_public_key.is_file():
            _write_new(kit.coordinator_public_key, layout.coordinator_signing_public_key.read_bytes(), private=False)
        registry[site_id] = registry_entry(signing)
    write_atomic(layout.registry, registry_bytes(registry))
    return layout


def add_coordinator_key(out: str | Path) -> KeyLayout:
    """The coordinator's run-request signing key, made once, and its public half in every site kit.

    For key directories made before this key existed: run again with the same DIR (nothing that
    exists is replaced), then give each site its new `coordinator_signing.pub`."""
    layout = KeyLayout(Path(out))
    if not layout.coordinator_signing_key.exists():
        layout.coordinator.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = keys.generate_signing_key()
        keys.save_private_key(key, layout.coordinator_signing_key)
        keys.save_public_key(key, layout.coordinator_signing_public_key)
    public = layout.coordinator_signing_public_key.read_bytes()
    for site_id in layout.site_ids():
        kit = layout.site(site_id)
        if kit.root.is_dir() and not kit.coordinator_public_key.exists():
            _write_new(kit.coordinator_public_key, public, private=False)
    return layout


def _check_site_ids(sites: Iterable[str]) -> list[str]:
    ids = [s.strip() for s in sites if s.strip()]
    if not ids:
        raise ConfigError("give at least one site id (--sites a,b,c)")
    for s in ids:
        if not all(c.isalnum() or c in "-_." for c in s) or s.startswith("."):
            raise ConfigError(f"site id must be letters, digits, '-', '_' or '.', got {s!r}")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"site ids must be unique, got {', '.join(ids)}")
    return ids


def _refuse_existing_site(layout: KeyLayout, site_id: str) -> None:
    if layout.site(site_id).root.exists():
        raise ConfigError(f"refusing to overwrite existing keys in {layout.site(site_id).root}")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(not (c.isalnum() or c in "-.*") for c in host):
        raise ConfigError(f"not a host name or IP address for the SuperLink certificate: {host!r}")
    return x509.DNSName(host)


def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    keys.write_new_file(path, data, mode=keys.PRIVATE_KEY_MODE if private else keys.PUBLIC_KEY_MODE)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
