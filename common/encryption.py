"""Encryption at rest: AES-256-GCM for files the coordinator keeps (adapters, strategy state).

An encrypted file is `MAGIC || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The associated
data is MAGIC plus a caller-chosen `context` (the file's role, e.g. "adapter_model.safetensors"),
so a file decrypts only with the right key, unaltered, in its own role: any changed byte, a wrong
key or a wrong role is a `DecryptionFailed`, never garbage.

The key is 32 random bytes, kept as base64 text in a 0600 file (`write_key_file`) and handed to a
process by `SILO_AT_REST_KEY_FILE` (a path) or `SILO_AT_REST_KEY` (the base64 itself); see
`key_from_env`. Whole files are encrypted in memory: fine for LoRA adapters (MBs to a few hundred
MB); AES-GCM caps one message near 64 GB anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common import keys
from common.errors import ConfigError, VerificationFailed
from common.files import write_atomic

MAGIC = b"SILO-AESGCM-1\n"
"""First bytes of every encrypted file: format and version, so a reader knows what it holds."""
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random per file, so one key may encrypt ~2^32 files safely
TAG_BYTES = 16
SUFFIX = ".enc"
"""Encrypted files keep their name plus this suffix, so nothing mistakes them for plain ones."""
ENV_KEY_FILE = "SILO_AT_REST_KEY_FILE"
ENV_KEY = "SILO_AT_REST_KEY"
CIPHER = "AES-256-GCM"


class DecryptionFailed(VerificationFailed):
    """An encrypted file is altered, truncated, in the wrong role, or the key is not the one it was written with."""


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=8 * KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short public name for a key (domain-separated hash: reveals nothing about the key)."""
    return hashlib.sha256(b"silo at-rest key id\0" + key).hexdigest()[:16]


def write_key_file(path: str | Path, key: bytes | None = None) -> bytes:
    """Write a new key (or `key`) as base64 text, mode 0600; refuses to overwrite. Returns the key."""
    key = generate_key() if key is None else _check_key(key, str(path))
    # common.keys' writer: O_EXCL (never overwrite) and the mode set at creation.
    keys.write_new_file(Path(path), base64.b64encode(key) + b"\n", mode=keys.PRIVATE_KEY_MODE)
    return key


def load_key_file(path: str | Path) -> bytes:
    keys.refuse_readable_by_others(path)  # a key others can read protects nothing
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the at-rest key file {path}: {err}") from None
    return parse_key(text, source=str(path))


def parse_key(text: str, *, source: str) -> bytes:
    """A key written as base64 (as `write_key_file` does) or as 64 hex digits."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 2 * KEY_BYTES else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ConfigError(f"{source}: the at-rest key must be {KEY_BYTES} bytes as base64 or hex") from None
    return _check_key(raw, source)


def key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key named by SILO_AT_REST_KEY_FILE or given in SILO_AT_REST_KEY; None when neither is set."""
    env = os.environ if environ is None else environ
    path, value = env.get(ENV_KEY_FILE, ""), env.get(ENV_KEY, "")
    if path and value:
        raise ConfigError(f"set one of {ENV_KEY_FILE} and {ENV_KEY}, not both")
    if path:
        return load_key_file(path)
    if value:
        return parse_key(value, source=ENV_KEY)
    return None


def encrypt_bytes(key: bytes, plaintext: bytes, *, context: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(context))


def decrypt_bytes(key: bytes, blob: bytes, *, context: str, source: str = "data") -> bytes:
    if not blob.startswith(MAGIC):
        raise DecryptionFailed(f"{source}: not a Silo encrypted file (no {MAGIC.strip().decode()} header)")
    body = blob[len(MAGIC) :]
    if len(body) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionFailed(f"{source}: truncated encrypted file ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], _aad(context))
    except InvalidTag:
        raise DecryptionFailed(
            f"{source}: authentication failed: the file was altered, or the key (id {key_id(key)}) is not the one "
            "it was encrypted with"
        ) from None


def is_encrypted(path: str | Path) -> bool:
    try:
        with Path(path).open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def encrypt_file(key: bytes, src: str | Path, dst: str | Path | None = None, *, context: str | None = None) -> Path:
    """Encrypt `src` into `dst` (default `src` + ".enc"), written atomically; `src` is left alone.
    The context defaults to `src`'s file name."""
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + SUFFIX)
    write_atomic(dst, encrypt_bytes(key, src.read_bytes(), context=context or src.name))
    return dst


def decrypt_file(key: bytes, src: str | Path, dst: str | Path | None = None, *, context: str | None = None) -> Path:
    """Decrypt `src` into `dst` (default `src` without ".enc"); nothing is written unless it authenticates.
    The context defaults to `src`'s file name without ".enc"."""
    src = Path(src)
    plain_name = src.name.removesuffix(SUFFIX)
    dst = Path(dst) if dst is not None else src.with_name(plain_name)
    write_atomic(dst, decrypt_bytes(key, src.read_bytes(), context=context or plain_name, source=str(src)))
    return dst


def _aad(context: str) -> bytes:
    return MAGIC + context.encode()


def _check_key(key: bytes, source: str) -> bytes:
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{source}: the at-rest key must be {KEY_BYTES} bytes, got {len(key)}")
    return key
