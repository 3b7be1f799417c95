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


def test_keys_load_public_key_accepts_public_or_private_pem(tmp_path):
    key = keys.generate_signing_key()
    keys.save_private_key(key, tmp_path / "site.pem")
    keys.save_public_key(key, tmp_path / "site.pub")
    assert keys.fingerprint(keys.load_public_key(tmp_path / "site.pub")) == keys.fingerprint(key)
    assert keys.fingerprint(keys.load_public_key(tmp_path / "site.pem")) == keys.fingerprint(key)


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
