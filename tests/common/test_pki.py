"""A key directory's layout (common/pki.py): its paths, the checks before the coordinator or a site
starts, and installing a kit's signing key into the site's state directory."""

import shutil
import stat

import pytest

from common import keys, pki
from common.errors import ConfigError
from silo.keygen import create_keys


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return create_keys(tmp_path_factory.mktemp("keys"), ["hospital-a", "bank-c"])


def test_install_site_signing_key_copies_once_and_refuses_a_different_key(tmp_path):
    layout = create_keys(tmp_path / "keys", ["a"])
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
    layout = create_keys(tmp_path / "keys", ["a"])
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
    layout = create_keys(tmp_path / "keys", ["a"])
    layout.check_coordinator()
    (layout.coordinator / name).chmod(0o640)
    with pytest.raises(
        ConfigError, match=rf"{name} is a private key open to group or others \(mode 640\); fix: chmod 600 "
    ):
        layout.check_coordinator()


def test_check_coordinator_refuses_a_private_key_among_the_supernode_public_keys(tmp_path):
    layout = create_keys(tmp_path / "keys", ["a", "b"])
    assert [p.name for p in layout.supernode_public_keys()] == ["a.pub", "b.pub"]
    # An operator who copies the site's private half by mistake would upload it to the SuperLink.
    layout.supernode_public_key("b").unlink()
    shutil.copy(layout.site("b").auth_key, layout.supernode_public_key("b"))
    with pytest.raises(ConfigError, match=r"b\.pub holds a private key where a public key is expected"):
        layout.check_coordinator()
