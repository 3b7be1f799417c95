import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import keys
from common.errors import ConfigError


def test_keys_save_private_key_is_owner_only_and_round_trips(tmp_path):
    key = keys.generate_signing_key()
    path = keys.save_private_key(key, tmp_path / "site.pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.fingerprint(keys.load_private_key(path)) == keys.fingerprint(key)


def test_keys_save_refuses_to_overwrite(tmp_path):
    key = keys.generate_signing_key()
    keys.save_private_key(key, tmp_path / "site.pem")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        keys.save_private_key(keys.generate_signing_key(), tmp_path / "site.pem")
    assert keys.fingerprint(keys.load_private_key(tmp_path / "site.pem")) == keys.fingerprint(key)


def test_keys_load_public_key_refuses_a_private_key(tmp_path):
    key = keys.generate_signing_key()
    keys.save_private_key(key, tmp_path / "site.pem")
    keys.save_public_key(key, tmp_path / "site.pub")
    assert keys.fingerprint(keys.load_public_key(tmp_path / "site.pub")) == keys.fingerprint(key)
    with pytest.raises(ConfigError, match=r"site\.pem holds a private key where a public key is expected"):
        keys.load_public_key(tmp_path / "site.pem")


@settings(max_examples=40, deadline=None)
@given(mode=st.integers(min_value=0, max_value=0o777))
def test_keys_load_private_key_refuses_any_group_or_other_bit(tmp_path_factory, mode):
    path = keys.save_private_key(keys.generate_signing_key(), tmp_path_factory.mktemp("k") / "site_signing.key")
    path.chmod(mode | 0o600)  # the owner can always read it: only the others' bits decide
    if mode & 0o077:
        with pytest.raises(ConfigError) as err:
            keys.load_private_key(path)
        assert str(err.value) == (
            f"{path} is a private key open to group or others (mode {mode | 0o600:03o}); fix: chmod 600 {path}"
        )
    else:
        keys.load_private_key(path)


def test_keys_world_readable_key_is_refused_before_it_is_parsed(tmp_path):
    # A readable junk file gets the permission error, not a parse error: the mode is checked first.
    (tmp_path / "k.pem").write_text("not a key")
    (tmp_path / "k.pem").chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod 600 .*k\.pem$"):
        keys.load_private_key(tmp_path / "k.pem")


def test_keys_load_rejects_non_keys(tmp_path):
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="junk.pem"):
        keys.load_public_key(tmp_path / "junk.pem")
    with pytest.raises(ConfigError, match="cannot read key file"):
        keys.load_private_key(tmp_path / "missing.pem")


def test_keys_fingerprint_is_sha256_hex_of_the_raw_public_key():
    key = keys.generate_signing_key()
    import hashlib

    assert keys.fingerprint(key) == hashlib.sha256(keys.public_key_raw(key)).hexdigest()
    assert keys.fingerprint(key) == keys.fingerprint(key.public_key())


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=256), flip=st.integers(min_value=0))
def test_keys_verify_rejects_any_changed_byte(data, flip):
    key = keys.generate_signing_key()
    signature = keys.sign(key, data)
    assert keys.verify(key.public_key(), data, signature)
    tampered = bytearray(data + b"\x00")
    tampered[flip % len(tampered)] ^= 0x01
    assert not keys.verify(key.public_key(), bytes(tampered), signature)
    assert not keys.verify(keys.generate_signing_key().public_key(), data, signature)
