"""`silo keys`' material: CA, SuperLink certificate, SuperNode and signing keys, registry, layout."""

import json
import shutil
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common import keys, pki
from common.errors import ConfigError


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return pki.create_keys(
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
    ca = pki.load_certificate(layout.ca_cert)
    cert = pki.load_certificate(layout.superlink_cert)
    cert.verify_directly_issued_by(ca)
    assert sorted(pki.certificate_hosts(cert)) == ["127.0.0.1", "::1", "coord.example", "localhost"]
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
    assert pki.read_registry(layout.registry).keys() == registry["sites"].keys()


def test_create_keys_refuses_to_overwrite(layout):
    before = layout.ca_key.read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        pki.create_keys(layout.root, ["new-site"])
    assert layout.ca_key.read_bytes() == before
    assert not layout.site("new-site").root.exists()


def test_add_sites_extends_the_registry_and_refuses_known_sites(tmp_path):
    layout = pki.create_keys(tmp_path, ["a"])
    fingerprint_a = json.loads(layout.registry.read_text())["sites"]["a"]["fingerprint"]
    pki.add_sites(tmp_path, ["b"])
    sites = json.loads(layout.registry.read_text())["sites"]
    assert sorted(sites) == ["a", "b"] and sites["a"]["fingerprint"] == fingerprint_a
    assert layout.site("b").ca_cert.read_bytes() == layout.ca_cert.read_bytes()
    with pytest.raises(ConfigError, match="already in"):
        pki.add_sites(tmp_path, ["a"])
    with pytest.raises(ConfigError, match="no CA or registry"):
        pki.add_sites(tmp_path / "elsewhere", ["c"])


@pytest.mark.parametrize("sites", [[], ["a", "a"], ["../x"], ["a b"], [".hidden"]])
def test_create_keys_rejects_bad_site_ids(tmp_path, sites):
    with pytest.raises(ConfigError, match="site id"):
        pki.create_keys(tmp_path, sites)
    assert not (tmp_path / "coordinator").exists()


def test_create_keys_rejects_a_bad_host(tmp_path):
    with pytest.raises(ConfigError, match="host name or IP"):
        pki.create_keys(tmp_path, ["a"], hosts=["bad host!"])


def test_read_registry_rejects_a_fingerprint_that_does_not_match(tmp_path):
    layout = pki.create_keys(tmp_path, ["a"])
    registry = json.loads(layout.registry.read_text())
    registry["sites"]["a"]["fingerprint"] = "0" * 64
    layout.registry.write_text(json.dumps(registry))
    with pytest.raises(ConfigError, match="fingerprint .* does not match"):
        pki.read_registry(layout.registry)


def test_install_site_signing_key_copies_once_and_refuses_a_different_key(tmp_path):
    layout = pki.create_keys(tmp_path / "keys", ["a"])
    kit = layout.site("a")
    state = tmp_path / "state"
    target = pki.install_site_signing_key(kit, state)
    assert target.read_bytes() == kit.signing_key.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (state / "site_signing.pub").read_bytes() == kit.signing_public_key.read_bytes()
    assert pki.install_site_signing_key(kit, state) == target  # the same key again: fine

    other_state = tmp_path / "other"
    other_state.mkdir()
    keys.save_private_key(keys.generate_signing_key(), other_state / "site_signing.key")
    with pytest.raises(ConfigError, match="different signing key"):
        pki.install_site_signing_key(kit, other_state)


def test_site_kit_check_names_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="missing ca.pem, supernode_auth.key, site_signing.key"):
        pki.SiteKit(tmp_path).check()


def test_for_coordinator_accepts_the_key_dir_or_its_coordinator_part_anywhere(layout, tmp_path):
    assert pki.KeyLayout.for_coordinator(layout.root).ca_cert == layout.ca_cert
    assert pki.KeyLayout.for_coordinator(layout.coordinator).registry == layout.registry
    copy = tmp_path / "etc-silo"
    shutil.copytree(layout.coordinator, copy)
    moved = pki.KeyLayout.for_coordinator(copy)
    assert moved.superlink_key == copy / "superlink.key"
    assert moved.supernode_public_key("bank-c") == copy / "supernodes" / "bank-c.pub"


@pytest.mark.parametrize("name", ["supernode_auth.key", "site_signing.key"])
def test_site_kit_check_refuses_a_private_key_open_to_others(tmp_path, name):
    layout = pki.create_keys(tmp_path / "keys", ["a"])
    kit = layout.site("a")
    kit.check()
    (kit.root / name).chmod(0o604)
    with pytest.raises(ConfigError) as err:
        kit.check()
    assert str(err.value) == (
        f"{kit.root / name} is a private key open to group or others (mode 604); fix: chmod 600 {kit.root / name}"
    )


@pytest.mark.parametrize("name", ["superlink.key", "ca.key"])
def test_check_coordinator_refuses_its_private_keys_open_to_others(tmp_path, name):
    layout = pki.create_keys(tmp_path / "keys", ["a"])
    layout.check_coordinator()
    (layout.coordinator / name).chmod(0o640)
    with pytest.raises(
        ConfigError, match=rf"{name} is a private key open to group or others \(mode 640\); fix: chmod 600 "
    ):
        layout.check_coordinator()


def test_check_coordinator_refuses_a_private_key_among_the_supernode_public_keys(tmp_path):
    layout = pki.create_keys(tmp_path / "keys", ["a", "b"])
    assert [p.name for p in layout.supernode_public_keys()] == ["a.pub", "b.pub"]
    # An operator who copies the site's private half by mistake would upload it to the SuperLink.
    layout.supernode_public_key("b").unlink()
    shutil.copy(layout.site("b").auth_key, layout.supernode_public_key("b"))
    with pytest.raises(ConfigError, match=r"b\.pub holds a private key where a public key is expected"):
        layout.check_coordinator()
