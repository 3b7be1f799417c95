"""Ed25519 signing keys: generate, store, load, sign, verify, fingerprint.

Private keys are PEM (PKCS#8, unencrypted: the file mode 0600 is the protection, as for SSH host
keys); public keys are PEM (SubjectPublicKeyInfo). Saving never overwrites an existing file. As
ssh does, a private key file that group or others may access is refused on load, and so is a
private key handed in where a public one is expected (it would be copied, shown or uploaded).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ConfigError

PRIVATE_KEY_MODE = 0o600
"""Owner read/write only: the key file's permissions are its only protection."""
PUBLIC_KEY_MODE = 0o644
"""Readable by all: a public key or certificate is no secret, only its integrity matters."""
# Any of these bits lets a user other than the owner read (or replace) a private key.
OTHERS_BITS = 0o077
# Every PEM or OpenSSH private key's armour line holds this; no public key's does.
PRIVATE_MARKER = b"PRIVATE KEY-----"


def refuse_readable_by_others(path: str | Path) -> None:
    """A private key (or secret) file group or others can access is refused, naming the fix.

    A missing file is left to the reader, which reports it in its own words."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & OTHERS_BITS:
        raise ConfigError(f"{path} is a private key open to group or others (mode {mode:03o}); fix: chmod 600 {path}")


def refuse_private_key_material(path: str | Path, data: bytes) -> None:
    """`data`, read from `path` where a public key is expected, must not be a private key."""
    if PRIVATE_MARKER in data:
        raise ConfigError(
            f"{path} holds a private key where a public key is expected; give its .pub file "
            "(and keep the private key where it was)"
        )


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> Path:
    """Write `key` as PEM with mode 0600; refuse to overwrite an existing file."""
    path = Path(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_new_file(path, pem, mode=PRIVATE_KEY_MODE)
    return path


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: str | Path) -> Path:
    """Write the public half as PEM; refuse to overwrite an existing file."""
    path = Path(path)
    write_new_file(path, public_key_pem(key), mode=PUBLIC_KEY_MODE)
    return path


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_raw(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The 32 raw public key bytes."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as err:
        raise ConfigError(f"not a raw Ed25519 public key ({len(raw)} bytes): {err}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    refuse_readable_by_others(path)
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}.")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load a PEM public key; a private key in its place is refused."""
    path = Path(path)
    data = _read(path)
    refuse_private_key_material(path, data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise ConfigError(f"{path}: not a PEM public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}.")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """64-byte Ed25519 signature of `data`."""
    return key.sign(data)


def verify(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """True when `signature` is `key`'s signature of `data`; never raises on a bad signature."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """sha256 hex of the raw public key bytes: a stable, short name for a key."""
    return hashlib.sha256(public_key_raw(key)).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read key file {path}: {err.strerror}") from None


def write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create `path` with `data` and `mode`; an existing file is refused, never overwritten.

    O_EXCL refuses to overwrite; the mode applies at creation, so a key is never world-readable."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite existing key file {path}.") from None
    except OSError as err:
        raise ConfigError(f"cannot create key file {path}: {err.strerror}") from None
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have narrowed `mode` at creation; set it exactly
