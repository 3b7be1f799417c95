"""Encryption at rest: AES-256-GCM files, keys from a file or the environment, tampering caught."""

import base64
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import encryption
from common.errors import ConfigError

KEY = bytes(range(32))


def test_encrypt_decrypt_round_trips_and_hides_the_plaintext(tmp_path):
    src = tmp_path / "adapter_model.safetensors"
    src.write_bytes(b"lora weights " * 100)
    enc = encryption.encrypt_file(KEY, src)
    assert enc.name == "adapter_model.safetensors.enc"
    assert encryption.is_encrypted(enc) and not encryption.is_encrypted(src)
    assert b"lora weights" not in enc.read_bytes()
    out = encryption.decrypt_file(KEY, enc, tmp_path / "out.safetensors", context="adapter_model.safetensors")
    assert out.read_bytes() == src.read_bytes()
    # Default destination: the name without .enc.
    src.unlink()
    assert encryption.decrypt_file(KEY, enc).read_bytes() == b"lora weights " * 100


def test_each_encryption_uses_a_fresh_nonce():
    assert encryption.encrypt_bytes(KEY, b"same", context="x") != encryption.encrypt_bytes(KEY, b"same", context="x")


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=256), position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_tampered_byte_is_caught(data, position, flip):
    blob = bytearray(encryption.encrypt_bytes(KEY, data, context="adapter"))
    blob[position % len(blob)] ^= flip
    with pytest.raises(encryption.DecryptionFailed):
        encryption.decrypt_bytes(KEY, bytes(blob), context="adapter")


def test_wrong_key_wrong_context_and_truncation_are_caught():
    blob = encryption.encrypt_bytes(KEY, b"secret", context="adapter_model.safetensors")
    with pytest.raises(encryption.DecryptionFailed, match="authentication failed"):
        encryption.decrypt_bytes(bytes(32), blob, context="adapter_model.safetensors")
    with pytest.raises(encryption.DecryptionFailed, match="authentication failed"):
        encryption.decrypt_bytes(KEY, blob, context="server_state.npz")
    with pytest.raises(encryption.DecryptionFailed, match="truncated"):
        encryption.decrypt_bytes(KEY, blob[: len(encryption.MAGIC) + 10], context="adapter_model.safetensors")
    with pytest.raises(encryption.DecryptionFailed, match="not a Silo encrypted file"):
        encryption.decrypt_bytes(KEY, b"plain text", context="adapter_model.safetensors")


def test_failed_decryption_writes_nothing(tmp_path):
    enc = tmp_path / "a.enc"
    enc.write_bytes(encryption.encrypt_bytes(KEY, b"secret", context="a"))
    with pytest.raises(encryption.DecryptionFailed):
        encryption.decrypt_file(bytes(32), enc)
    assert not (tmp_path / "a").exists()


def test_write_key_file_is_0600_base64_and_never_overwritten(tmp_path):
    path = tmp_path / "at_rest.key"
    key = encryption.write_key_file(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert encryption.load_key_file(path) == key
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        encryption.write_key_file(path)
    assert encryption.load_key_file(path) == key


def test_key_from_env_reads_a_file_or_a_value_never_both(tmp_path):
    path = tmp_path / "k"
    key = encryption.write_key_file(path)
    assert encryption.key_from_env({}) is None
    assert encryption.key_from_env({"SILO_AT_REST_KEY_FILE": str(path)}) == key
    assert encryption.key_from_env({"SILO_AT_REST_KEY": base64.b64encode(key).decode()}) == key
    assert encryption.key_from_env({"SILO_AT_REST_KEY": key.hex()}) == key
    with pytest.raises(ConfigError, match="not both"):
        encryption.key_from_env({"SILO_AT_REST_KEY_FILE": str(path), "SILO_AT_REST_KEY": key.hex()})


@pytest.mark.parametrize("value", ["short", base64.b64encode(bytes(16)).decode(), "zz" * 32])
def test_parse_key_rejects_keys_that_are_not_32_bytes(value):
    with pytest.raises(ConfigError, match="32 bytes"):
        encryption.parse_key(value, source="SILO_AT_REST_KEY")


def test_key_id_is_stable_and_differs_per_key():
    assert encryption.key_id(KEY) == encryption.key_id(bytes(KEY))
    assert encryption.key_id(KEY) != encryption.key_id(bytes(32))
    assert KEY.hex()[:16] not in encryption.key_id(KEY)
