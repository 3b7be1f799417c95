"""`silo keys`' material (silo/keygen.py): CA, SuperLink certificate, SuperNode and signing keys,
registry, and the coordinator's run-request key: made once, its public half in every site kit, added
to key directories made before it existed without replacing anything."""

import json
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common import keys
from common.errors import ConfigError
from common.registry import load_registry
from silo import keygen
from silo.flower_processes import kit_coordinator_key


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return keygen.create_keys(
        tmp_path_factory.mktemp("keys"), ["hospital-a", "bank-c"], hosts=["127.0.0.1", "coord.example"]
    )


def test_create_keys_writes_the_documented_layout_private_keys_0600(layout):
    private = [layout.ca_key, layout.superlink_key]
    public = [layout.ca_cert, layout.superlink_cert, layout.registry]
    for site in ("hospital-a", "bank-c"):
        kit = layout.site(site)
        private += [kit.auth_key, kit.signing_key]
        public += [kit.ca_cert, kit.auth_public_key, kit.signing_public_key, layout.supernode_public_key(site)]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in public:
        assert path.is_file(), path
    assert sorted(p.name for p in (layout.root / "sites").iterdir()) == ["bank-c", "hospital-a"]
    assert layout.site("bank-c").ca_cert.read_bytes() == layout.ca_cert.read_bytes()


def test_superlink_certificate_is_signed_by_the_ca_for_the_hosts_given(layout):
    ca = keygen.load_certificate(layout.ca_cert)
    cert = keygen.load_certificate(layout.superlink_cert)
    cert.verify_directly_issued_by(ca)
    assert sorted(keygen.certificate_hosts(cert)) == ["127.0.0.1", "::1", "coord.example", "localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Python's own TLS stack accepts the pair as a server identity trusting only this CA.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(layout.superlink_cert, layout.superlink_key)
    ssl.create_default_context(cafile=str(layout.ca_cert))


def test_supernode_auth_keys_are_what_flower_reads(layout):
    # flower-supernode: load_ssh_private_key -> EC key; `flwr supernode register`: OpenSSH NIST EC public key.
    kit = layout.site("hospital-a")
    private = serialization.load_ssh_private_key(kit.auth_key.read_bytes(), None)
    public = serialization.load_ssh_public_key(kit.auth_public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert layout.supernode_public_key("hospital-a").read_bytes() == kit.auth_public_key.read_bytes()
    other = serialization.load_ssh_public_key(layout.site("bank-c").auth_public_key.read_bytes())
    assert other.public_numbers() != public.public_numbers()


def test_registry_lists_each_sites_signing_key_and_fingerprint(layout):
    registry = json.loads(layout.registry.read_text())
    assert sorted(registry["sites"]) == ["bank-c", "hospital-a"]
    for site, entry in registry["sites"].items():
        kit_key = keys.load_private_key(layout.site(site).signing_key)
        assert entry == {
            "signing_public_key": keys.public_key_pem(kit_key).decode(),
            "fingerprint": keys.fingerprint(kit_key),
        }
    assert load_registry(layout.registry).entries.keys() == registry["sites"].keys()


def test_create_keys_refuses_to_overwrite(layout):
    before = layout.ca_key.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        keygen.create_keys(layout.root, ["new-site"])
    assert layout.ca_key.read_bytes() == before
    assert not layout.site("new-site").root.exists()


def test_add_sites_extends_the_registry_and_refuses_known_sites(tmp_path):
    layout = keygen.create_keys(tmp_path, ["a"])
    fingerprint_a = json.loads(layout.registry.read_text())["sites"]["a"]["fingerprint"]
    keygen.add_sites(tmp_path, ["b"])
    sites = json.loads(layout.registry.read_text())["sites"]
    assert sorted(sites) == ["a", "b"] and sites["a"]["fingerprint"] == fingerprint_a
    assert layout.site("b").ca_cert.read_bytes() == layout.ca_cert.read_bytes()
    with pytest.raises(ConfigError, match="already in"):
        keygen.add_sites(tmp_path, ["a"])
    with pytest.raises(ConfigError, match="no CA or registry"):
        keygen.add_sites(tmp_path / "elsewhere", ["c"])


@pytest.mark.parametrize("sites", [[], ["a", "a"], ["../x"], ["a b"], [".hidden"]])
def test_create_keys_rejects_bad_site_ids(tmp_path, sites):
    with pytest.raises(ConfigError, match="site id"):
        keygen.create_keys(tmp_path, sites)
    assert not (tmp_path / "coordinator").exists()


def test_create_keys_rejects_a_bad_host(tmp_path):
    with pytest.raises(ConfigError, match="host name or IP"):
        keygen.create_keys(tmp_path, ["a"], hosts=["bad host!"])


def test_create_keys_gives_every_kit_the_coordinators_run_request_key(tmp_path: Path):
    layout = keygen.create_keys(tmp_path / "keys", ["a", "b"])
    private = keys.load_private_key(layout.coordinator_signing_key)
    assert stat.S_IMODE(layout.coordinator_signing_key.stat().st_mode) == 0o600
    for site in ("a", "b"):
        kit = layout.site(site)
        assert keys.load_public_key(kit.coordinator_public_key) == private.public_key()
        assert not (kit.root / layout.coordinator_signing_key.name).exists()  # never the private half
    keygen.add_sites(layout.root, ["c"])
    assert layout.site("c").coordinator_public_key.read_bytes() == layout.coordinator_signing_public_key.read_bytes()


def test_add_coordinator_key_upgrades_an_old_key_directory_and_keeps_it(tmp_path: Path):
    layout = keygen.create_keys(tmp_path / "keys", ["a"])
    # A directory from before run requests were signed: no coordinator key anywhere.
    for path in (layout.coordinator_signing_key, layout.coordinator_signing_public_key):
        path.unlink()
    layout.site("a").coordinator_public_key.unlink()
    with pytest.raises(ConfigError, match="add-coordinator-key"):
        kit_coordinator_key(layout.site("a"))

    out = subprocess.run(
        [sys.executable, "-m", "silo", "keys", "--out", str(layout.root), "--add-coordinator-key"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "coordinator_signing" in out.stdout
    first = layout.coordinator_signing_key.read_bytes()
    assert kit_coordinator_key(layout.site("a")).read_bytes() == layout.coordinator_signing_public_key.read_bytes()
    keygen.add_coordinator_key(layout.root)  # again: nothing replaced
    assert layout.coordinator_signing_key.read_bytes() == first
